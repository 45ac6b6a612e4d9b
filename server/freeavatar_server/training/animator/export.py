"""Export a trained animator for the live path: one ONNX graph per avatar, with everything
that depends on the avatar alone folded in as constants (`inference.animator` runs them)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F

from freeavatar_server.files import write_atomically
from freeavatar_server.inference.animator import (
    ANIMATOR_FILE,
    INPUT_NAME,
    MANIFEST_FILE,
    OUTPUT_NAME,
    onnx_name,
)
from freeavatar_server.training.animator.model import _key, dead_zone, load_animator


def export_runtime(model_dir: Path) -> dict[str, object]:
    """Write one ONNX graph per avatar of `model_dir/animator.pt` and the manifest."""
    model = load_animator(model_dir / ANIMATOR_FILE)
    avatars: dict[str, dict[str, object]] = {}
    for index, avatar_id in enumerate(model.avatar_ids):
        path = model_dir / onnx_name(index)
        wrapper = (_BoundLinear if model.config.readout == "linear" else _Bound)(model, avatar_id).eval()
        graph = io.BytesIO()  # exported in memory, then written whole or not at all (files.py)
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, model.config.in_dim),),
            graph,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        onnx.checker.check_model(onnx.load_from_string(graph.getvalue()))
        write_atomically(path, graph.getvalue())
        avatars[avatar_id] = {"file": path.name, "controls": list(model.rigs[avatar_id].names)}
    config = model.config
    manifest = {"embed_dim": config.embed_dim, "blendshape_dim": config.blendshape_dim, "unit_dim": config.unit_dim,
                "inputs": [list(part) for part in config.input_parts],  # the input row's parts, in order
                "avatars": avatars}
    write_atomically(model_dir / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
    return manifest


class _BoundLinear(torch.nn.Module):
    """A linear readout for one avatar with its input scale folded into the weights: a single
    matmul, its dead zone, then the clamp into each control's range."""

    def __init__(self, model, avatar_id: str) -> None:  # model: SharedAnimator
        super().__init__()
        key = _key(avatar_id)
        with torch.no_grad():
            weight = model.weights[key] / model.input_scale  # (controls, in_dim)
            self.weight = weight.T.clone()
            self.bias = (model.biases[key] - model.input_mean @ weight.T).clone()
            self.width = getattr(model, f"dead_zone_{key}").clone()
            self.default = getattr(model, f"default_{key}").clone()
            self.lo = getattr(model, f"lo_{key}").clone()
            self.span = getattr(model, f"span_{key}").clone()

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        offset = dead_zone(rows @ self.weight + self.bias, self.width)
        return self.lo + (self.default + offset).clamp(0, 1) * self.span


def _Bound(model, avatar_id: str) -> torch.nn.Module:  # noqa: N802 (builds a module class)
    """`model(embeddings, avatar_id)` rewritten for inference with everything that depends on
    the avatar alone computed once: its FiLM scales and shifts (code and own modulation), its
    control queries with their attention projection, and the query half of the readout (with
    the attention's output projection folded into it). What is left per frame is a few
    matmuls; exporting the training module as it is gives ~250 ONNX nodes of shape
    bookkeeping, which cost more than the arithmetic at batch 1."""
    class Bound(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c, key, attend = model.config, _key(avatar_id), model.attend
            self.tokens, self.token_dim, self.heads = c.tokens, c.token_dim, c.heads
            self.stem, self.blocks, self.to_tokens = model.stem, model.blocks, model.to_tokens
            head_dim = c.token_dim // c.heads
            w_q, w_k, w_v = attend.in_proj_weight.chunk(3)
            b_q, b_k, b_v = attend.in_proj_bias.chunk(3)
            read_in, _, read_out = model.readout
            w_attended, w_query = read_in.weight[:, : c.token_dim], read_in.weight[:, c.token_dim :]
            with torch.no_grad():
                code = model.codes[key]
                self.films = model.modulation(avatar_id)
                query = model.queries[key] + model.query_from_code(code)  # (controls, token_dim)
                q = (query @ w_q.T + b_q) * head_dim**-0.5
                self.q = q.view(-1, c.heads, head_dim).transpose(0, 1).contiguous()  # (heads, controls, d)
                self.w_kv, self.b_kv = torch.cat([w_k, w_v]).clone(), torch.cat([b_k, b_v]).clone()
                self.token_pos = model.token_pos.detach().clone()
                out = attend.out_proj
                self.w_read = w_attended @ out.weight  # attended = merged @ W_o^T + b_o, folded in
                self.read_const = query @ w_query.T + out.bias @ w_attended.T + read_in.bias
                self.w_logit, self.b_logit = read_out.weight[0].clone(), read_out.bias.clone()
                self.lo = getattr(model, f"lo_{key}").clone()
                self.span = getattr(model, f"span_{key}").clone()
                self.sigmoid = model.config.output == "sigmoid"
                self.default = getattr(model, f"default_{key}").clone()

        def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
            x = self.stem(embeddings)
            for block, (gamma, beta) in zip(self.blocks, self.films, strict=True):
                x = x + block.fc2(F.gelu(block.fc1(block.norm(x)) * (1 + gamma) + beta))
            tokens = self.to_tokens(x).view(-1, self.tokens, self.token_dim) + self.token_pos
            head_dim = self.token_dim // self.heads
            kv = (tokens @ self.w_kv.T + self.b_kv).view(-1, self.tokens, 2, self.heads, head_dim)
            k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # (B, heads, tokens, d)
            weights = torch.softmax(self.q @ k.transpose(-1, -2), dim=-1)  # (B, heads, controls, tokens)
            merged = (weights @ v).transpose(1, 2).reshape(-1, self.q.shape[1], self.token_dim)
            hidden = F.gelu(merged @ self.w_read.T + self.read_const)
            offset = hidden @ self.w_logit + self.b_logit
            unit = torch.sigmoid(offset) if self.sigmoid else (self.default + offset).clamp(0, 1)
            return self.lo + unit * self.span

    return Bound()




if __name__ == "__main__":
    import sys

    for directory in sys.argv[1:] or ["."]:
        print(json.dumps(export_runtime(Path(directory)), indent=2))
