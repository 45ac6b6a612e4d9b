"""The animator at inference time, for the live pipeline.

    runtime = AnimatorRuntime.load(model_dir)       # a directory an animator job published
    runtime.avatar_ids                              # the avatars it can drive
    rig = runtime.predict(embeddings, avatar_id, blendshapes)
                                                    # (B, 16), (B, 52) -> (B, n_controls) float32

An animator trained to read the front end's 52 ARKit blendshapes beside the embedding
(`runtime.blendshape_dim == 52`) takes them as the second half of its input; it was trained
with either half dropped now and then, so a frame without them (None) is read from the
embedding alone. Older animators read the embedding only and ignore the blendshapes.
`predict` returns control values in each control's own range, in rig-spec order
(`runtime.control_names(avatar_id)`). It runs on ONNX Runtime, one small graph per avatar with
that avatar's code and control queries folded in as constants (so the graph is a few matmuls),
one intra-op thread, no Python-side torch at all. Measured cost (docs/performance.md):
about 0.1 ms per avatar per frame on one core.

The model directory holds `animator.pt` (the torch checkpoint, config and rigs inside) and a
`manifest.json` naming the per-avatar ONNX files (`training.animator.export` writes both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freeavatar_server.inference.onnx import open_session

ANIMATOR_FILE = "animator.pt"
MANIFEST_FILE = "manifest.json"
INPUT_NAME, OUTPUT_NAME = "embedding", "rig"


def onnx_name(index: int) -> str:
    return f"animator_{index}.onnx"


class NotExported(FileNotFoundError):
    def __init__(self, model_dir: Path) -> None:
        super().__init__(
            f"the animator in {model_dir} has no ONNX graphs to serve: export them with "
            f"`python -m freeavatar_server.training.animator.export {model_dir}`"
        )


def runtime_manifest(model_dir: Path) -> dict[str, object]:
    """The manifest of a model directory's ONNX graphs; NotExported if any is missing (every
    job exports them when it publishes)."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.exists():
        raise NotExported(Path(model_dir))
    manifest = json.loads(path.read_text())
    if not all((path.parent / entry["file"]).exists() for entry in manifest["avatars"].values()):
        raise NotExported(Path(model_dir))
    return manifest


@dataclass
class AnimatorRuntime:
    """Embeddings -> rig controls for every avatar in one published animator model."""

    sessions: dict[str, object]  # avatar id -> onnxruntime.InferenceSession
    controls: dict[str, list[str]]
    embed_dim: int
    blendshape_dim: int = 0  # 52: the blendshapes are appended to the embedding

    @classmethod
    def load(cls, model_dir: Path, threads: int = 1) -> AnimatorRuntime:
        model_dir = Path(model_dir)
        manifest = runtime_manifest(model_dir)
        sessions = {
            avatar_id: open_session(model_dir / entry["file"], threads)
            for avatar_id, entry in manifest["avatars"].items()
        }
        controls = {aid: list(entry["controls"]) for aid, entry in manifest["avatars"].items()}
        return cls(sessions, controls, int(manifest["embed_dim"]), int(manifest.get("blendshape_dim", 0)))

    @property
    def avatar_ids(self) -> list[str]:
        return list(self.sessions)

    def control_names(self, avatar_id: str) -> list[str]:
        return self.controls[avatar_id]

    def predict(self, embeddings: np.ndarray, avatar_id: str, blendshapes: np.ndarray | None = None) -> np.ndarray:
        """(B, 16) float32 embeddings and, for an animator that reads them, (B, 52) blendshapes
        (None: read from the embedding alone) -> (B, n_controls) float32 in the controls' ranges."""
        if avatar_id not in self.sessions:
            raise KeyError(f"the animator has no avatar {avatar_id!r} (it has {self.avatar_ids})")
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be (B, {self.embed_dim}), got {x.shape}")
        if self.blendshape_dim:
            b = np.zeros((len(x), self.blendshape_dim), np.float32) if blendshapes is None else np.asarray(blendshapes, np.float32)
            if b.shape != (len(x), self.blendshape_dim):
                raise ValueError(f"blendshapes must be ({len(x)}, {self.blendshape_dim}), got {b.shape}")
            x = np.concatenate([x, b], axis=1)
        return self.sessions[avatar_id].run([OUTPUT_NAME], {INPUT_NAME: x})[0]
