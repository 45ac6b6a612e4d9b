"""The expression encoder on ONNX Runtime: face crops -> 16-d unit-length embeddings, and the
action-unit read-out beside them when the encoder has one.

The graph takes float32 RGB (N, 3, S, S) in [0, 1] (standardisation is inside the graph) and
returns `embedding` (N, 16) and, for an encoder trained with an action-unit head, `units`
(N, 25: the standardised action units that head reads); the batch axis is dynamic. The live
pipeline serves an int8 copy (ONNX Runtime's dynamic quantisation of the matmul weights): 1.7x
faster per face on this CPU, the same held-out accuracy (docs/models.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from freeavatar_server.inference.onnx import open_session
from freeavatar_server.inference.shipped import ENCODER_ONNX

INPUT_NAME, OUTPUT_NAME = "images", "embedding"
UNITS_NAME = "units"  # the action-unit read-out, in graphs of encoders that have one


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 with antialiased bilinear resampling,
    exactly as the encoder's training data was resized."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    # torch only here: the live path feeds crops of the right size and never reaches this
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(images), 256):
        x = torch.from_numpy(images[start : start + 256]).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


class OnnxEncoder:
    """Face crops -> 16-d expression embeddings (and action units) on ONNX Runtime.

    Takes uint8 RGB crops (N, S, S, 3) (or one (S, S, 3)); crops of another size are resized.
    One intra-op thread by default: the server runs many sessions side by side.
    """

    def __init__(self, path: Path = ENCODER_ONNX, *, threads: int = 1, provider: str | None = None) -> None:
        self.session = open_session(path, threads, provider)
        self.size = int(self.session.get_inputs()[0].shape[2])
        units = [o for o in self.session.get_outputs() if o.name == UNITS_NAME]
        # 0: an encoder exported without an action-unit read-out (read_batch gives None)
        self.unit_dim = int(units[0].shape[1]) if units else 0

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, 3, S, S) in [0, 1] -> (N, 16)."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0]

    def run_with_units(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 (N, 3, S, S) in [0, 1] -> (N, 16) embeddings and (N, unit_dim) units, or
        None for the units when the graph has no read-out."""
        if not self.unit_dim:
            return self.run(x), None
        embeddings, units = self.session.run([OUTPUT_NAME, UNITS_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})
        return embeddings, units

    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self.run(x) for x in self._inputs(images)])

    def read_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Crops -> (N, 16) embeddings and the (N, unit_dim) action-unit read-out, from one run
        of the graph; the units are None for an encoder without the read-out."""
        readings = [self.run_with_units(x) for x in self._inputs(images)]
        embeddings = np.concatenate([e for e, _ in readings])
        return embeddings, (np.concatenate([u for _, u in readings]) if self.unit_dim else None)

    def embed(self, image: np.ndarray) -> np.ndarray:
        """One (S, S, 3) uint8 crop -> (16,)."""
        return self.embed_batch(image[None])[0]

    def _inputs(self, images: np.ndarray) -> Iterator[np.ndarray]:
        """uint8 crops -> the graph's float32 (n, 3, S, S) inputs, at most 64 faces each (one
        batch converted at a time: a whole evaluation set in float32 is hundreds of MB)."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        images = resize_uint8(images, self.size)
        for start in range(0, len(images), 64):
            yield images[start : start + 64].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
