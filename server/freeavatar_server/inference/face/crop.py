"""Cut the expression encoder's input from a full frame and a face box.

The encoder is trained on `render_faces` crops, which are framed on the HEAD, not on the face
box: the head centre sits 0.04 crop half-sides above the crop centre and the head radii are
1.2x the identity's own (so the forehead-to-chin face box fills about 70% of the crop). A
detector only sees the face box, whose relation to the head depends on identity (head
proportions), roll and jaw opening. `crop_square` therefore maps a box to the crop with a
least-squares fit of the exact render_faces framing over 20,000 synthetic identities, random
poses and expressions (the fit is `training.face.crop_fit.fit_crop_framing`; tests re-run it; box height and
width are nearly collinear, so the two coefficients trade off between samples while the
predicted crop stays put):

    centre x  = box centre x                              (residual std 0.026 box widths)
    centre y  = y0 + 0.0762 * box_w + 0.3381 * box_h       (residual std 0.010 box widths)
    half side = 0.3510 * box_w + 0.3586 * box_h            (residual std 0.024 box widths)

The residuals (1-3% of the face) are far inside the framing jitter render_faces trains on
(shift +-7% of the crop, scale +-10%), so the encoder sees in the stream what it saw in training.
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_CY = (0.0762, 0.3381)  # (per box width, per box height) below the box top
CROP_HALF = (0.3510, 0.3586)  # (per box width, per box height)


def crop_square(box: np.ndarray | tuple[float, float, float, float]) -> np.ndarray:
    """Face box (x0, y0, x1, y1) -> the render_faces-framed square (x0, y0, x1, y1), float."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
    cx = (x0 + x1) / 2
    cy = y0 + CROP_CY[0] * bw + CROP_CY[1] * bh
    half = CROP_HALF[0] * bw + CROP_HALF[1] * bh
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float64)


def cut_window(frame: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """Resample the square region (x0, y0, x1, y1; may leave the frame) to (size, size, 3).

    One affine warp, sub-pixel exact. When shrinking by more than 2x the frame is first
    area-averaged by an integer factor, so small crops are anti-aliased the way the renderer's
    are instead of aliasing through bilinear sampling. Pixels outside the frame repeat the edge
    (a face cut by the frame edge keeps a plausible background rather than a black bar).
    """
    x0, y0, x1, y1 = (float(v) for v in square)
    side = max(x1 - x0, 1e-3)
    shrink = int(side / size / 2.0)
    if shrink >= 2:
        # crop a margin-padded integer region first: area-shrinking the whole frame for a
        # small face would cost more than the warp
        ix0, iy0 = int(np.floor(x0)) - shrink, int(np.floor(y0)) - shrink
        ix1, iy1 = int(np.ceil(x1)) + shrink, int(np.ceil(y1)) + shrink
        region = _padded_region(frame, ix0, iy0, ix1, iy1)
        h, w = region.shape[:2]
        region = cv2.resize(
            region, (max(w // shrink, 1), max(h // shrink, 1)), interpolation=cv2.INTER_AREA
        )
        frame = region
        sx, sy = w / region.shape[1], h / region.shape[0]
        x0, x1 = (x0 - ix0) / sx, (x1 - ix0) / sx
        y0, y1 = (y0 - iy0) / sy, (y1 - iy0) / sy
    scale_x, scale_y = size / (x1 - x0), size / (y1 - y0)
    # Continuous coordinates (pixel i spans [i, i+1)): output pixel centre u + 0.5 comes from
    # source x0 + (u + 0.5) / scale; warpAffine maps source index to output index.
    m = np.array(
        [[scale_x, 0.0, (0.5 - x0) * scale_x - 0.5], [0.0, scale_y, (0.5 - y0) * scale_y - 0.5]],
        dtype=np.float64,
    )
    return cv2.warpAffine(
        frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _padded_region(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    h, w = frame.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx0 >= cx1 or cy0 >= cy1:  # entirely outside: nothing to show but the nearest edge
        cx0, cx1 = min(max(x0, 0), w - 1), min(max(x0, 0), w - 1) + 1
        cy0, cy1 = min(max(y0, 0), h - 1), min(max(y0, 0), h - 1) + 1
    region = frame[cy0:cy1, cx0:cx1]
    pads = (max(cy0 - y0, 0), max(y1 - cy1, 0), max(cx0 - x0, 0), max(x1 - cx1, 0))
    if any(pads):
        region = cv2.copyMakeBorder(region, *pads, borderType=cv2.BORDER_REPLICATE)
    return region


def crop_face(frame: np.ndarray, box: np.ndarray | tuple[float, ...], size: int) -> np.ndarray:
    """(H, W, 3) uint8 frame + face box (x0, y0, x1, y1) -> (size, size, 3) uint8 encoder input,
    framed as render_faces frames its crops."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3), got {frame.shape}")
    return cut_window(np.ascontiguousarray(frame), crop_square(box), size)
