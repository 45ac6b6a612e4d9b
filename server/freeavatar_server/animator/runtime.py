"""The animator at inference time, for the live pipeline.

    runtime = AnimatorRuntime.load(model_dir)       # a directory an animator job published
    runtime.avatar_ids                              # the avatars it can drive
    rig = runtime.predict(embeddings, avatar_id)    # (B, 16) float32 -> (B, n_controls) float32

`predict` returns control values in each control's own range, in rig-spec order
(`runtime.control_names(avatar_id)`). It runs on ONNX Runtime, one small graph per avatar with
that avatar's code and control queries folded in as constants (so the graph is a few matmuls),
one intra-op thread, no Python-side torch at all. Measured cost is in docs/results.md
("Animator"): about 0.1 ms per avatar per frame on one core.

The model directory holds `animator.pt` (the torch checkpoint, config and rigs inside) and a
`manifest.json` naming the per-avatar ONNX files; `load` exports any that are missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANIMATOR_FILE = "animator.pt"
MANIFEST_FILE = "manifest.json"
INPUT_NAME, OUTPUT_NAME = "embedding", "rig"


def onnx_name(index: int) -> str:
    return f"animator_{index}.onnx"


def export_runtime(model_dir: Path) -> dict[str, object]:
    """Write one ONNX graph per avatar of `model_dir/animator.pt` and the manifest."""
    import onnx
    import torch

    from freeavatar_server.animator.model import load_animator

    model = load_animator(model_dir / ANIMATOR_FILE)
    avatars: dict[str, dict[str, object]] = {}
    for index, avatar_id in enumerate(model.avatar_ids):
        path = model_dir / onnx_name(index)
        wrapper = _Bound(model, avatar_id).eval()
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, model.config.embed_dim),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        onnx.checker.check_model(onnx.load(str(path)))
        avatars[avatar_id] = {"file": path.name, "controls": list(model.rigs[avatar_id].names)}
    manifest = {"embed_dim": model.config.embed_dim, "avatars": avatars}
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def runtime_manifest(model_dir: Path) -> dict[str, object]:
    """The manifest of a model directory's ONNX graphs, exporting them first if any is missing."""
    path = Path(model_dir) / MANIFEST_FILE
    if path.exists():
        manifest = json.loads(path.read_text())
        if all((path.parent / entry["file"]).exists() for entry in manifest["avatars"].values()):
            return manifest
    return export_runtime(Path(model_dir))


def _Bound(model, avatar_id: str):  # noqa: N802 (a module factory: torch loads lazily)
    """`model(embeddings, avatar_id)` rewritten for inference with everything that depends on
    the avatar alone computed once: its FiLM scales and shifts (code and own modulation), its
    control queries with their attention projection, and the query half of the readout (with
    the attention's output projection folded into it). What is left per frame is a few
    matmuls; exporting the training module as it is gives ~250 ONNX nodes of shape
    bookkeeping, which cost more than the arithmetic at batch 1."""
    import torch
    import torch.nn.functional as F

    from freeavatar_server.animator.model import _key

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


@dataclass
class AnimatorRuntime:
    """Embeddings -> rig controls for every avatar in one published animator model."""

    sessions: dict[str, object]  # avatar id -> onnxruntime.InferenceSession
    controls: dict[str, list[str]]
    embed_dim: int

    @classmethod
    def load(cls, model_dir: Path, threads: int = 1) -> AnimatorRuntime:
        import onnxruntime as ort

        model_dir = Path(model_dir)
        manifest = runtime_manifest(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        sessions = {}
        for avatar_id, entry in manifest["avatars"].items():
            sessions[avatar_id] = ort.InferenceSession(
                str(model_dir / entry["file"]), options, providers=["CPUExecutionProvider"]
            )
        controls = {aid: list(entry["controls"]) for aid, entry in manifest["avatars"].items()}
        return cls(sessions, controls, int(manifest["embed_dim"]))

    @property
    def avatar_ids(self) -> list[str]:
        return list(self.sessions)

    def control_names(self, avatar_id: str) -> list[str]:
        return self.controls[avatar_id]

    def predict(self, embeddings: np.ndarray, avatar_id: str) -> np.ndarray:
        """(B, 16) float32 embeddings -> (B, n_controls) float32 in the controls' ranges."""
        if avatar_id not in self.sessions:
            raise KeyError(f"the animator has no avatar {avatar_id!r} (it has {self.avatar_ids})")
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be (B, {self.embed_dim}), got {x.shape}")
        return self.sessions[avatar_id].run([OUTPUT_NAME], {INPUT_NAME: x})[0]
