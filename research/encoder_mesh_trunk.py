"""Does a real-face-trained trunk make a better expression encoder? MediaPipe's face mesh (the
478-point landmark network the live front end runs, 1.2 M parameters, trained on real faces)
imported into torch with onnx2torch, its landmark heads cut off, and the encoder's heads put on
its pooled features (BatchNorm, a linear 16-d embedding, L2 norm; the 25 action-unit read-out
beside it); then tuned exactly as the shipped encoder's dense fine-tunes are (`train.py`'s
triplet stage: every clear triplet among fresh synthetic faces, the action units, 25% cel-shaded
characters, 30% mascots). `--scratch` trains the same network from random weights instead, so
that what the real-face weights bring is measured apart from the architecture.

    .venv/bin/python research/encoder_mesh_trunk.py --out runs/mesh_trunk [--scratch] [--steps 1000]

It prints, and writes to OUT/report.json, the held-out figures `freeavatar eval encoder`
reports (the same triplets, probe and stylised sets, without the baselines), and the trunk's
ONNX Runtime time per face on one thread. The trunk takes the crop the encoder takes, at
`--size` px (the mesh's own input is 256; its framing, 1.5x the face, is the encoder crop's).

onnx2torch is a research dependency (`pip install onnx2torch==1.5.15 --no-deps`): it imports
torchvision for its detection-op converters, and PyPI's torchvision does not load beside this
project's torch, so empty stand-ins take its place (the mesh has none of those ops).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import fx, nn

from freeavatar_server.inference.shipped import MEDIAPIPE_DIR
from freeavatar_server.synth.actors import N_AU
from freeavatar_server.training.encoder import train as T
from freeavatar_server.training.encoder.evaluate import (
    build_held_out_sets,
    encoder_figures,
    torch_features,
)
from freeavatar_server.training.encoder.model import ModelConfig

HEADS = 3  # the mesh graph's last three convolutions: presence, tongue, landmarks


def import_mesh() -> fx.GraphModule:
    stand_in = types.ModuleType("torchvision")
    stand_in.ops = types.ModuleType("torchvision.ops")
    stand_in.ops.nms = stand_in.ops.batched_nms = stand_in.ops.roi_align = None
    sys.modules.setdefault("torchvision", stand_in)
    sys.modules.setdefault("torchvision.ops", stand_in.ops)
    from onnx2torch import convert  # lazy: after the stand-ins

    return convert(onnx.load(MEDIAPIPE_DIR / "face_landmarks.onnx"))


def trunk_of(mesh: fx.GraphModule) -> fx.GraphModule:
    """The mesh up to the feature map its landmark and presence heads read."""
    graph = mesh.graph
    heads = [n for n in graph.nodes if n.op == "call_module" and isinstance(mesh.get_submodule(n.target), nn.Conv2d)][-HEADS:]
    features = heads[0].args[0]
    for node in list(graph.nodes):
        if node.op == "output":
            graph.erase_node(node)
    graph.output(features)
    graph.eliminate_dead_code()
    trunk = fx.GraphModule(mesh, graph)
    trunk.delete_all_unused_submodules()
    return trunk


class MeshTrunkEncoder(nn.Module):
    """RGB crop in [0, 1] (N, 3, S, S) -> 16-d L2-normalised embedding (and, asked for, the
    action units), as `ExpressionEncoder` answers."""

    def __init__(self, trunk: nn.Module, width: int = 128, embed_dim: int = 16, units: int = N_AU) -> None:
        super().__init__()
        self.trunk = trunk
        self.norm = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, embed_dim)
        self.au_head = nn.Linear(width, units)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.trunk(x).mean((2, 3)))

    def forward(self, x: torch.Tensor, with_units: bool = False):
        pooled = self.pooled(x)
        embedding = F.normalize(self.head(pooled), dim=-1)
        return (embedding, self.au_head(pooled)) if with_units else embedding


def reset(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def evaluate(model: nn.Module, size: int, n_triplets: int = 2000) -> dict:
    """`freeavatar eval encoder`'s held-out figures for a torch model (no baselines)."""
    model.eval()
    return encoder_figures(torch_features(model), build_held_out_sets(size, n_triplets, n_quads=500))


def onnx_ms_per_face(model: MeshTrunkEncoder, size: int, out: Path) -> float:
    """ONNX Runtime, one thread, batch 1: the median of 200 runs."""
    import onnxruntime as ort

    model.eval()
    path = out / "trunk_encoder.onnx"
    torch.onnx.export(model, torch.rand(1, 3, size, size), str(path), input_names=["image"], output_names=["embedding"], dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.rand(1, 3, size, size).astype(np.float32)
    times = []
    for _ in range(220):
        started = time.perf_counter()
        session.run(None, {"image": x})
        times.append(time.perf_counter() - started)
    return float(np.median(times[20:]) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=64, help="faces a step")
    parser.add_argument("--au-weight", type=float, default=4.0)
    parser.add_argument("--scratch", action="store_true", help="random weights instead of the mesh's")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--eval-triplets", type=int, default=2000, help="as freeavatar eval encoder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = T.TrainConfig(
        out_dir=str(args.out), seed=args.seed, model=ModelConfig(img_size=args.size, au_units=N_AU),
        stylised=0.25, mascots=0.3, triplet_steps=args.steps, triplet_batch=args.batch, triplet_lr=args.lr, au_weight=args.au_weight,
        threads=args.threads,
    )  # fmt: skip
    torch.manual_seed(args.seed)  # the new heads (and, with --scratch, the trunk)
    model = MeshTrunkEncoder(trunk_of(import_mesh()))
    if args.scratch:
        reset(model.trunk)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps({**cfg.to_dict(), "scratch": args.scratch}, indent=2))
    d = T.init_distributed()
    spec = T.triplet_stage(cfg, T.validation_triplets(cfg, d), d, model=model)
    history = T.run_stage(cfg, spec, d, resume=args.resume)
    report = {
        "init": "random" if args.scratch else "mediapipe face mesh",
        "steps": args.steps,
        "last_validation": next((h for h in reversed(history) if "val_acc_unamb" in h), None),
        **evaluate(model, args.size, args.eval_triplets),
        "onnx_ms_per_face": onnx_ms_per_face(model, args.size, args.out),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
