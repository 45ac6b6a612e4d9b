"""The one way the live path opens an ONNX Runtime session, and its provider policy."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def providers() -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu), CPU always."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def open_session(
    path: Path | str, threads: int = 1, provider: str | None = None, *, made_by: str = ""
) -> ort.InferenceSession:
    """A session for one model file. The streaming pipeline runs many actors side by side on
    few cores: one thread per call by default, and no thread pool spinning between frames.
    A missing file is a FileNotFoundError naming it and `made_by`, the command that makes it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"model not found at {path}" + (f"; make it with {made_by}" if made_by else ""))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=[provider] if provider else providers())
