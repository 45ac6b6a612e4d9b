"""The animator at inference time, for the live pipeline.

    runtime = AnimatorRuntime.load(model_dir)       # a directory an animator job published
    runtime.avatar_ids                              # the avatars it can drive
    rig = runtime.predict(embeddings, avatar_id, blendshapes, units=units)
                                                    # (B, 16), (B, 52), (B, 25) -> (B, n_controls) float32

Its input row is the embedding, then the blendshapes, then the action units, each only if the
animator reads it (`AnimatorConfig.input_parts`). An animator trained to read the front end's
52 ARKit blendshapes (`runtime.blendshape_dim == 52`) was trained with the embedding or the
blendshapes dropped now and then, so a frame without them (None) is read from the embedding
alone. An animator that reads the encoder's action-unit read-out (`runtime.unit_dim == 25`:
`OnnxEncoder.read_batch` gives the units with the embedding, from one run of the graph) cannot
go without them: `predict` raises ValueError. Animators that do not read the blendshapes or the
units ignore them.
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
    unit_dim: int = 0  # 25: the encoder's action units are appended last

    @classmethod
    def load(cls, model_dir: Path, threads: int = 1) -> AnimatorRuntime:
        model_dir = Path(model_dir)
        manifest = runtime_manifest(model_dir)
        sessions = {
            avatar_id: open_session(model_dir / entry["file"], threads)
            for avatar_id, entry in manifest["avatars"].items()
        }
        controls = {aid: list(entry["controls"]) for aid, entry in manifest["avatars"].items()}
        return cls(sessions, controls, int(manifest["embed_dim"]), int(manifest.get("blendshape_dim", 0)),
                   int(manifest.get("unit_dim", 0)))  # manifests from before the units: 0

    @property
    def avatar_ids(self) -> list[str]:
        return list(self.sessions)

    def control_names(self, avatar_id: str) -> list[str]:
        return self.controls[avatar_id]

    def predict(
        self,
        embeddings: np.ndarray,
        avatar_id: str,
        blendshapes: np.ndarray | None = None,
        *,
        units: np.ndarray | None = None,
    ) -> np.ndarray:
        """(B, 16) float32 embeddings and, for an animator that reads them, (B, 52) blendshapes
        (None: read from the embedding alone) and (B, 25) action units (required) -> (B,
        n_controls) float32 in the controls' ranges."""
        if avatar_id not in self.sessions:
            raise KeyError(f"the animator has no avatar {avatar_id!r} (it has {self.avatar_ids})")
        row = self.input_rows(embeddings, blendshapes, units=units)
        return self.sessions[avatar_id].run([OUTPUT_NAME], {INPUT_NAME: row})[0]

    def input_rows(
        self, embeddings: np.ndarray, blendshapes: np.ndarray | None = None, *, units: np.ndarray | None = None
    ) -> np.ndarray:
        """The (B, in_dim) float32 rows this animator reads, joined from what `predict` takes;
        ValueError for a part of the wrong shape or a required one missing."""
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or (self.embed_dim and x.shape[1] != self.embed_dim):
            raise ValueError(f"embeddings must be (B, {self.embed_dim or 16}), got {x.shape}")
        parts = [x] if self.embed_dim else []  # 0: an animator that reads the units alone
        if self.blendshape_dim:
            b = np.zeros((len(x), self.blendshape_dim), np.float32) if blendshapes is None else np.asarray(blendshapes, np.float32)
            if b.shape != (len(x), self.blendshape_dim):
                raise ValueError(f"blendshapes must be ({len(x)}, {self.blendshape_dim}), got {b.shape}")
            parts.append(b)
        if self.unit_dim:
            if units is None:
                raise ValueError(
                    f"this animator reads the expression encoder's {self.unit_dim} action units beside the "
                    "embedding and got none: pass units= (OnnxEncoder.read_batch gives them, from an encoder "
                    "graph exported with its action-unit read-out)")
            u = np.asarray(units, np.float32)
            if u.shape != (len(x), self.unit_dim):
                raise ValueError(f"units must be ({len(x)}, {self.unit_dim}), got {u.shape}")
            parts.append(u)
        return np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1))
