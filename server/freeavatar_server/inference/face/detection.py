"""What the face localiser's graph takes and gives: its config (kept in the ONNX metadata),
the input scaling, and the decoding of its output maps into one face per image."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LocaliserConfig:
    """Architecture and input conventions; saved beside the weights."""

    widths: tuple[int, int, int] = (16, 32, 48)  # stride 2, 4, 8 stages
    context: tuple[int, ...] = (2, 4, 8)  # dilations of the stride-8 context convolutions
    context_width: int = 48
    stride: int = 8
    full_input: tuple[int, int] = (160, 120)  # (width, height) a 4:3 frame is shrunk to
    crop_input: int = 96  # side of the square tracking window fed to the network

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LocaliserConfig:
        raw = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def preprocess(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1], the network's input."""
    x = np.ascontiguousarray(np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2))
    return x * (2.0 / 255.0) - 1.0


@dataclass(frozen=True)
class Detection:
    """The strongest face in one input image, in that image's pixels."""

    box: np.ndarray  # (4,) float32 x0, y0, x1, y1
    confidence: float


def decode(output: np.ndarray, stride: int) -> list[Detection]:
    """(B, 5, h, w) network output -> the strongest cell of each image as a Detection.

    The box is a confidence-weighted average of the boxes predicted by the 3x3 cells around the
    peak: neighbouring cells see the same face, and averaging them cuts the box jitter a
    tracker would otherwise have to filter out.
    """
    out = []
    _, _, h, w = output.shape
    for o in output:
        logit = o[0]
        k = int(np.argmax(logit))
        py, px = divmod(k, w)
        y0, y1, x0, x1 = max(py - 1, 0), min(py + 2, h), max(px - 1, 0), min(px + 2, w)
        conf = 1.0 / (1.0 + np.exp(-logit[y0:y1, x0:x1].astype(np.float64)))
        weight = conf * (conf >= 0.5 * conf.max())
        cy, cx = np.mgrid[y0:y1, x0:x1]
        cx = (cx + 0.5) * stride
        cy = (cy + 0.5) * stride
        dist = np.exp(o[1:5, y0:y1, x0:x1].astype(np.float64)) * stride
        boxes = np.stack([cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]])
        box = (boxes * weight).reshape(4, -1).sum(1) / weight.sum()
        out.append(Detection(box.astype(np.float32), float(conf.max())))
    return out
