"""Synthetic training frames for the face localiser: full camera frames with exact face boxes.

Two kinds of frame, because the localiser runs on two kinds of input:

* "full": a whole camera frame shrunk to the detector's input (160x120 for 640x480). Faces of
  6-70% of the frame height, anywhere, some cut by an edge; 12% of frames hold no face at all
  (the person is placed far outside the picture) and 6% show only hair/shoulders above or below
  the frame, so the model learns to say "no face".
* "crop": the square window the tracker cuts around the last box (face 22-60% of the side,
  centre jittered), the input of every tracking step.

Frames are rendered at the model resolution or at 2x / 4x and shrunk with area averaging
(what the pipeline does to a camera frame), so the model sees both the renderer's direct
anti-aliasing and real downscaling. Everything is a pure function of (seed, kind, n).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from freeavatar_server.synth.actors import render_frames, sample_expressions

# Visible share of a face box above which it counts as a face the model must find.
MIN_VISIBLE = 0.5
# Below this visible share a face is background; between the two the heatmap loss ignores it.
MAX_IGNORED = 0.25


@dataclass
class FrameSet:
    """Frames with the full (unclipped) face box and whether a face must be reported."""

    images: np.ndarray  # (N, H, W, 3) uint8
    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1 in pixels; may extend past the frame
    visible: np.ndarray  # (N,) float32 share of the box area inside the frame


def visible_share(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Share of each box's area inside a width x height frame."""
    b = np.asarray(boxes, dtype=np.float64)
    iw = np.clip(np.minimum(b[:, 2], width) - np.maximum(b[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(b[:, 3], height) - np.maximum(b[:, 1], 0), 0, None)
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)
    return (iw * ih / area).astype(np.float32)


def _full_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    """Requested boxes for full frames: sizes log-uniform, a mix of inside/edge/absent."""
    w = height * np.exp(rng.uniform(np.log(0.06), np.log(0.7), n))
    h = 1.35 * w
    kind = rng.choice(4, size=n, p=[0.70, 0.12, 0.12, 0.06])
    cx = rng.uniform(w / 2, width - w / 2)
    cy = rng.uniform(np.minimum(h / 2, height / 2), np.maximum(height - h / 2, height / 2))
    # kind 1: straddle a random edge, 15-90% of the box inside
    edge = rng.integers(4, size=n)
    inside = rng.uniform(0.15, 0.9, n)
    cx = np.where((kind == 1) & (edge == 0), -w / 2 + inside * w, cx)
    cx = np.where((kind == 1) & (edge == 1), width + w / 2 - inside * w, cx)
    cy = np.where((kind == 1) & (edge == 2), -h / 2 + inside * h, cy)
    cy = np.where((kind == 1) & (edge == 3), height + h / 2 - inside * h, cy)
    # kind 2: nobody in the picture
    cx = np.where(kind == 2, -4.0 * width, cx)
    # kind 3: face just above the top edge (hair, neck and shoulders may show) or below
    above = rng.random(n) < 0.7
    cy = np.where((kind == 3) & above, -h / 2 - rng.uniform(0.02, 0.3, n) * h, cy)
    cy = np.where((kind == 3) & ~above, height + h / 2 + rng.uniform(0.02, 0.3, n) * h, cy)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _crop_boxes(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    """Requested boxes for tracker windows: face 22-60% of the side, centre jittered."""
    w = side * rng.uniform(0.22, 0.6, n)
    h = 1.35 * w
    cx = side / 2 + rng.uniform(-0.18, 0.18, n) * side
    cy = side / 2 + rng.uniform(-0.18, 0.18, n) * side
    lost = rng.random(n) < 0.05  # a window the face has left: teach "no face" here too
    cx = np.where(lost, -4.0 * side, cx)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _render(
    boxes: np.ndarray, width: int, height: int, factor: int, seed: int, rng: np.random.Generator
) -> FrameSet:
    n = len(boxes)
    expr = sample_expressions(n, rng)
    ids = rng.integers(0, 2**62, n)
    seeds = rng.integers(0, 2**62, n)
    batch = render_frames(
        expr, ids, width=width * factor, height=height * factor,
        face_boxes=boxes * factor, sample_seeds=seeds,
    )  # fmt: skip
    images = batch.images
    if factor > 1:
        images = np.stack([
            cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA) for im in images
        ])  # fmt: skip
    out_boxes = batch.boxes / factor
    return FrameSet(images, out_boxes.astype(np.float32), visible_share(out_boxes, width, height))


def make_frames(kind: str, n: int, seed: int, width: int = 160, height: int = 120) -> FrameSet:
    """n training frames of `kind` ("full": width x height; "crop": width x width squares)."""
    rng = np.random.default_rng([seed, 0 if kind == "full" else 1])
    if kind == "full":
        boxes = _full_boxes(rng, n, width, height)
    elif kind == "crop":
        height = width
        boxes = _crop_boxes(rng, n, width)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    factor = int(rng.choice([1, 2, 4], p=[0.55, 0.35, 0.10]))
    return _render(boxes, width, height, factor, seed, rng)
