"""OpenCV's Haar cascade as a second opinion for real photographs, plus a cheap template tracker
to follow what it found.

The learned localiser has only ever seen synthetic faces; on a real photograph it may be unsure.
The frontal Haar cascade (shipped inside opencv-python-headless 4.x under cv2.data) is the
opposite: reliable on real frontal faces, weak on the synthetic ones (8-12 of 30), and slow
(tens of ms on a shrunk 640x480 frame on a busy core). So it only runs when the learned model
is unsure, and never every frame: a face it finds is then followed by normalised
cross-correlation of a small grey template (well under a millisecond) and re-anchored by a
cascade run inside a small window every few frames.

Haar boxes run from the brows to the lower lip, roughly square; our face boxes run forehead to
chin and cheek to cheek. `haar_to_face_box` maps one to the other (fit on synthetic frames the
cascade did find, width x0.96, height x1.05, centre 0.08 widths lower; checked by hand on the
astronaut photograph, where the chin needs x1.15: the mapping uses x1.0, x1.12, +0.07).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

HAAR_FILE = "haarcascade_frontalface_alt2.xml"


def cascade_path() -> Path:
    """The frontal-face cascade bundled with opencv-python(-headless) 4.x (5.x ships none)."""
    path = Path(cv2.data.haarcascades) / HAAR_FILE
    if not path.exists():
        raise FileNotFoundError(f"OpenCV ships no {HAAR_FILE} here (opencv 5.x?): {path}")
    return path


def haar_to_face_box(x: float, y: float, w: float, h: float) -> np.ndarray:
    """Haar (x, y, w, h) -> face box (x0, y0, x1, y1) in the synthetic world's convention."""
    cx, cy = x + w / 2, y + h / 2 + 0.07 * w
    hw, hh = 0.5 * w, 0.56 * h
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], dtype=np.float32)


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


@dataclass(frozen=True)
class HaarHit:
    box: np.ndarray  # (4,) face box, frame pixels, face-box convention
    confidence: float


class HaarFaceFinder:
    """The largest frontal face by the Haar cascade; one instance per tracker (OpenCV cascade
    objects are not documented as thread-safe)."""

    def __init__(self, long_side: int = 320, min_face: float = 0.1) -> None:
        self.cascade = cv2.CascadeClassifier(str(cascade_path()))
        if self.cascade.empty():
            raise RuntimeError(f"could not load {cascade_path()}")
        self.long_side = long_side  # frames are shrunk to this: cost grows with pixel count
        self.min_face = min_face  # smallest face searched, as a share of the shorter side

    def detect(
        self,
        image: np.ndarray,
        offset: tuple[float, float] = (0.0, 0.0),
        min_face: float | None = None,
    ) -> HaarHit | None:
        """Largest face in an RGB or grey image; `offset` is added to the box (window use),
        `min_face` overrides the smallest face searched (share of the shorter side)."""
        h, w = image.shape[:2]
        scale = min(1.0, self.long_side / max(h, w))
        small = _gray(image)
        if scale < 1.0:
            size = (max(int(w * scale), 1), max(int(h * scale), 1))
            small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
        small = cv2.equalizeHist(small)
        share = self.min_face if min_face is None else min_face
        side = max(int(min(small.shape) * share), 20)
        rects, neighbours = self.cascade.detectMultiScale2(
            small, scaleFactor=1.2, minNeighbors=3, minSize=(side, side)
        )
        if len(rects) == 0:
            return None
        k = int(np.argmax(rects[:, 2] * rects[:, 3]))
        x, y, bw, bh = (float(v) / scale for v in rects[k])
        box = haar_to_face_box(x, y, bw, bh) + np.array([*offset, *offset], dtype=np.float32)
        # More overlapping raw hits = a surer face; 3 (the minimum) -> 0.6, 10+ -> 0.95.
        conf = float(min(0.95, 0.45 + 0.05 * int(neighbours[k])))
        return HaarHit(box, conf)


class TemplateTracker:
    """Follows a face between cascade runs by normalised cross-correlation of a grey template,
    matched at a fixed small scale (template 24 px wide) inside a window twice the face."""

    TEMPLATE_W = 24

    def __init__(self, frame: np.ndarray, box: np.ndarray) -> None:
        self.box = np.asarray(box, dtype=np.float32).copy()
        self.template = self._patch(_gray(frame), self.box, 1.0)

    def _scale(self) -> float:
        return self.TEMPLATE_W / max(float(self.box[2] - self.box[0]), 1.0)

    def _patch(self, gray: np.ndarray, box: np.ndarray, grow: float) -> np.ndarray:
        s = self._scale()
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        hw, hh = (box[2] - box[0]) / 2 * grow, (box[3] - box[1]) / 2 * grow
        out_w = max(int(round(2 * hw * s)), 4)
        out_h = max(int(round(2 * hh * s)), 4)
        m = np.array([[s, 0, -(cx - hw) * s], [0, s, -(cy - hh) * s]], dtype=np.float64)
        # template and search are sampled the same way, so bilinear aliasing cancels out
        return cv2.warpAffine(
            gray, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )

    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Move the box to the best match in the new frame; returns (box, NCC score in [0, 1])."""
        search = self._patch(_gray(frame), self.box, 2.0)
        th, tw = self.template.shape
        if search.shape[0] < th or search.shape[1] < tw:
            return self.box.copy(), 0.0
        scores = cv2.matchTemplate(search, self.template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        s = self._scale()
        # search window top-left sits half a face up-left of the box's own top-left
        dx = (bx - (search.shape[1] - tw) / 2) / s
        dy = (by - (search.shape[0] - th) / 2) / s
        self.box = self.box + np.array([dx, dy, dx, dy], dtype=np.float32)
        return self.box.copy(), float(max(best, 0.0))
