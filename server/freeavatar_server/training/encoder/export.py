"""ONNX export of the expression encoder, its int8 copy, and shipping a run into the package.
The session that serves the graph is `inference.encoder.OnnxEncoder`."""

from __future__ import annotations

import json
from pathlib import Path

from freeavatar_server.inference.encoder import INPUT_NAME, OUTPUT_NAME, UNITS_NAME
from freeavatar_server.inference.face.carry import file_digest
from freeavatar_server.inference.shipped import (
    ENCODER_CHECKPOINT,
    ENCODER_INT8_ONNX,
    ENCODER_ONNX,
    ENCODER_UNITS,
    MODELS_DIR,
)


def export_onnx(encoder, path: Path, *, opset: int = 17) -> Path:
    """Write `encoder` (an ExpressionEncoder) to ONNX with a dynamic batch axis and check it.
    Outputs: `embedding` (B, 16) and, when the encoder has an action-unit read-out, `units`
    (B, au_units) beside it (consumers that fetch the embedding by name are unaffected)."""
    import onnx
    import torch

    encoder = encoder.eval()
    size = encoder.cfg.img_size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(1, 3, size, size)
    outputs = [OUTPUT_NAME] if encoder.au_head is None else [OUTPUT_NAME, UNITS_NAME]
    # The TorchScript exporter (dynamo=False) needs no extra packages (onnxscript) and gives a
    # plain, small graph for this all-static architecture.
    torch.onnx.export(
        encoder if encoder.au_head is None else _WithUnits(encoder),
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)},
        opset_version=opset,
        dynamo=False,
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = model.metadata_props.add()
    meta.key, meta.value = "model_config", json.dumps(encoder.cfg.to_dict())
    onnx.save(model, str(path))
    return path


def _WithUnits(encoder):  # noqa: N802 (builds a module class; torch stays a lazy import)
    """The encoder with its action-unit read-out as a second output: its own forward takes
    `with_units` as an argument, which the exporter cannot pass."""
    import torch

    class WithUnits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.encoder(images, with_units=True)

    return WithUnits().eval()


def quantize_onnx(src: Path, dst: Path) -> Path:
    """An int8 copy of an exported encoder: MatMul and Gemm weights quantised to int8, their
    activations quantised per call (dynamic). The ViT spends its time in those matmuls;
    quantising every op instead adds quantise/dequantise steps that cost more than they save
    (in one run here: 2.7 ms per face, against 1.0 ms for this copy and 2.2 ms for the float
    graph)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # reduce_range (7-bit weights): on x86 CPUs without VNNI the u8 x s8 products saturate their
    # 16-bit sums (a tiny encoder's cosine to float fell to 0.94 on an AVX2-only EPYC; 0.9998
    # with it), and a shipped copy must hold on every CPU it lands on
    quantize_dynamic(Path(src), dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"], reduce_range=True)
    return dst


def strip_checkpoint(src: Path, dst: Path) -> None:
    """Copy a training checkpoint without optimizer state (what ships in the package).
    MAE checkpoints keep only the encoder: the decoder is for pretraining only."""
    import torch

    ck = torch.load(src, map_location="cpu", weights_only=False)
    state = ck["model"]
    if ck["stage"] == "mae":
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    slim = {k: ck[k] for k in ("stage", "step", "done", "config", "model_config", "history")}
    slim["model"] = {k: v.clone() for k, v in state.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, dst)


def write_units(seed: int, graphs: list[Path], path: Path) -> Path:
    """An encoder's action units beside its graphs: their names, and each one's read-out at rest
    (a run's read-out is standardised by its `UnitScale`, drawn with its seed, so a unit at 0
    reads -mean/std), for the graphs (by SHA-256) that read them out (what
    `inference.face.emotion.UnitGuard` needs)."""
    from freeavatar_server.synth.actors import AU_INDEX  # lazy: synth loads torch
    from freeavatar_server.training.encoder.train import UnitScale

    scale = UnitScale.of_training_expressions(seed)
    rest = (-scale.mean / scale.std).tolist()
    units = {"names": list(AU_INDEX), "rest": [round(r, 6) for r in rest], "seed": seed, "encoders": [file_digest(g) for g in graphs]}
    Path(path).write_text(json.dumps(units, indent=1) + "\n")
    return Path(path)


def ship(run_dir: Path, models_dir: Path = MODELS_DIR) -> list[Path]:
    """Install a finished run as the package's default encoder: its ONNX graph, the int8 copy the
    live path runs, a slim .pt (what animator jobs train through) and, for an encoder with an
    action-unit read-out, its units' names and rest values. The baseline backbones stay in the
    run directory (`freeavatar eval encoder --run-dir`)."""
    from freeavatar_server.training.encoder.train import load_encoder  # lazy: torch

    run_dir, models_dir = Path(run_dir), Path(models_dir)
    encoder = load_encoder(run_dir / "triplet.pt")
    onnx_path = export_onnx(encoder, models_dir / ENCODER_ONNX.name)
    written = [onnx_path, quantize_onnx(onnx_path, models_dir / ENCODER_INT8_ONNX.name)]
    strip_checkpoint(run_dir / "triplet.pt", models_dir / ENCODER_CHECKPOINT.name)
    written.append(models_dir / ENCODER_CHECKPOINT.name)
    if encoder.au_head is not None:
        seed = json.loads((run_dir / "config.json").read_text())["seed"]
        written.append(write_units(seed, written[:2], models_dir / ENCODER_UNITS.name))
    return written
