"""ONNX export of the expression encoder and the ONNX Runtime session that serves it.

The graph takes float32 RGB (N, 3, S, S) in [0, 1] (standardisation is inside the graph) and
returns (N, 16) unit-length embeddings; the batch axis is dynamic. The session uses the CUDA
provider when onnxruntime-gpu is installed and the CPU provider otherwise.

The live pipeline serves an int8 copy (ONNX Runtime's dynamic quantisation of the matmul
weights): 1.7x faster per face on this CPU, the same held-out accuracy (docs/encoder.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_ONNX = MODELS_DIR / "expression_encoder.onnx"
INT8_ONNX = MODELS_DIR / "expression_encoder.int8.onnx"  # what the live pipeline runs
INPUT_NAME, OUTPUT_NAME = "images", "embedding"


def export_onnx(encoder, path: Path, *, opset: int = 17) -> Path:
    """Write `encoder` (an ExpressionEncoder) to ONNX with a dynamic batch axis and check it."""
    import onnx
    import torch

    encoder = encoder.eval()
    size = encoder.cfg.img_size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(1, 3, size, size)
    # The TorchScript exporter (dynamo=False) needs no extra packages (onnxscript) and gives a
    # plain, small graph for this all-static architecture.
    torch.onnx.export(
        encoder,
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = model.metadata_props.add()
    meta.key, meta.value = "model_config", json.dumps(encoder.cfg.to_dict())
    onnx.save(model, str(path))
    return path


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


def providers() -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu), CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxEncoder:
    """Face crops -> 16-d expression embeddings on ONNX Runtime.

    Takes uint8 RGB crops (N, S, S, 3) (or one (S, S, 3)); crops of another size are resized.
    One intra-op thread by default: the server runs many sessions side by side.
    """

    def __init__(self, path: Path = DEFAULT_ONNX, *, threads: int = 1, provider: str | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=[provider] if provider else providers())
        shape = self.session.get_inputs()[0].shape
        self.size = int(shape[2])

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, 3, S, S) in [0, 1] -> (N, 16)."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0]

    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        from freeavatar_server.encoder.data import resize_uint8

        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.shape[1] != self.size or images.shape[2] != self.size:
            images = resize_uint8(images, self.size)
        out = [
            self.run(images[s : s + 64].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
            for s in range(0, len(images), 64)
        ]
        return np.concatenate(out)

    def embed(self, image: np.ndarray) -> np.ndarray:
        """One (S, S, 3) uint8 crop -> (16,)."""
        return self.embed_batch(image[None])[0]


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


def ship(run_dir: Path, models_dir: Path = MODELS_DIR) -> list[Path]:
    """Install a finished run as the package's default encoder: ONNX graph, slim .pt files for
    the encoder and for the two baseline backbones `freeavatar eval encoder` compares against."""
    from freeavatar_server.encoder.train import load_encoder

    run_dir, models_dir = Path(run_dir), Path(models_dir)
    onnx_path = export_onnx(load_encoder(run_dir / "triplet.pt"), models_dir / DEFAULT_ONNX.name)
    written = [onnx_path, quantize_onnx(onnx_path, models_dir / INT8_ONNX.name)]
    for stage, name in (("triplet", "expression_encoder.pt"), ("mae", "expression_encoder_mae.pt"), ("classifier", "expression_encoder_classifier.pt")):
        if (run_dir / f"{stage}.pt").exists():
            strip_checkpoint(run_dir / f"{stage}.pt", models_dir / name)
            written.append(models_dir / name)
    return written
