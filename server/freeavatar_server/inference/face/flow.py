"""Following the face between mesh runs: the last mesh's landmarks moved to each new frame by
the motion of a few rigid points (forehead, nose, eye corners, cheeks), tracked from frame to
frame with OpenCV's pyramidal Lucas-Kanade optical flow and fitted as one similarity (shift,
turn, scale; least median of squares, so a point lost on a blinking lid or a hand does not
count).

The mesh runs at most 15 times a second per actor, fewer under load. Between runs the face box
the encoder and pose model crop from used to stay where the last mesh left it: on synthetic
clips of moving heads the head pose error rose from 1.0 degree (the mesh on every frame) to 1.25
at 15 meshes a second and 2.3 at 7.5; followed, it is 0.9 at either (research/mesh_rate_sweep.py).
Following the face costs 0.2-0.5 ms a frame against 8-10 ms for a mesh run.

    flow = FaceFlow()
    flow.start(frame, landmarks)         # a frame the mesh read
    moved = flow.follow(next_frame)      # (2, 3) similarity from the mesh's frame, or None
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

# mesh landmarks that move with the head, not with the expression: forehead, nose bridge and
# tip, nostrils, the eyes' inner and outer corners, cheekbones, temples (not lids, brows,
# lips or the jaw)
RIGID_LANDMARKS = (
    10, 151, 109, 338, 67, 297, 168, 6, 197, 195, 5, 4, 1, 98, 327,
    33, 133, 263, 362, 116, 345, 50, 280, 127, 356, 234, 454,
)  # fmt: skip
WINDOW = (9, 9)  # Lucas-Kanade window and pyramid levels above the frame's
LEVELS = 2
MARGIN = 0.2  # the region searched around the points, in shares of their extent
MIN_POINTS = 8  # fewer tracked points: the face is lost to the flow
# A point whose window changed more than this (mean absolute grey difference) is not counted:
# 0.4 median, 2.4 at the 95th percentile on a synthetic clip; 26-43 where the face was cut
# away or erased
MAX_PATCH_ERROR = 12.0
MAX_SCALE_STEP = 1.25  # a face that grows or shrinks more than this in one frame is not followed


def grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def search_region(points: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """The part of the frame the flow looks at around the points: (x0, y0, x1, y1), or None
    when too little of it is inside the frame."""
    lo, hi = points.min(0), points.max(0)
    pad = (hi - lo) * MARGIN + WINDOW[0] * 2
    h, w = shape[:2]
    x0, y0 = (max(int(v), 0) for v in lo - pad)
    x1, y1 = min(int(hi[0] + pad[0]) + 1, w), min(int(hi[1] + pad[1]) + 1, h)
    if x1 - x0 < WINDOW[0] or y1 - y0 < WINDOW[1]:
        return None
    return x0, y0, x1, y1


def similarity_step(previous: np.ndarray, current: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """How the points moved from one grey picture to the next (the same region of two frames,
    the points in its coordinates): (the (2, 3) similarity, the points it moved), or None when
    too few were tracked or the motion is not a face's."""
    moved, status, error = cv2.calcOpticalFlowPyrLK(previous, current, points, None, winSize=WINDOW, maxLevel=LEVELS)
    tracked = (status.ravel() == 1) & (error.ravel() < MAX_PATCH_ERROR)
    if tracked.sum() < MIN_POINTS:
        return None
    step, inliers = cv2.estimateAffinePartial2D(points[tracked], moved[tracked], method=cv2.LMEDS)
    if step is None or inliers.sum() < MIN_POINTS:
        return None
    scale = float(np.hypot(*step[:, 0]))
    if not 1 / MAX_SCALE_STEP <= scale <= MAX_SCALE_STEP:
        return None
    return step, points @ step[:, :2].T + step[:, 2]


@dataclass
class FaceFlow:
    """One stream's flow state: where the rigid points were in the last frame, the grey pixels
    of that frame around them (only there: a face is a small part of most frames), and the
    similarity from the mesh's frame to it."""

    _points: np.ndarray | None = field(default=None, repr=False)
    _region: tuple[int, int, int, int] = (0, 0, 0, 0)
    _grey: np.ndarray | None = field(default=None, repr=False)  # the last frame in _region
    _shape: tuple[int, ...] = ()  # the frames' shape
    _total: np.ndarray = field(default_factory=lambda: np.eye(2, 3), repr=False)

    def start(self, frame: np.ndarray, landmarks: np.ndarray) -> None:
        """A frame the mesh has read: follow from its landmarks."""
        self._total = np.eye(2, 3)
        self._shape = frame.shape
        self._look_around(frame, np.asarray(landmarks, np.float32)[list(RIGID_LANDMARKS), :2])

    def stop(self) -> None:
        self._grey = self._points = None

    def _look_around(self, frame: np.ndarray, points: np.ndarray) -> None:
        region = search_region(points, frame.shape)
        if region is None:
            self.stop()
            return
        x0, y0, x1, y1 = self._region = region
        self._grey, self._points = grey(frame[y0:y1, x0:x1]), points.astype(np.float32)

    def follow(self, frame: np.ndarray) -> np.ndarray | None:
        """The (2, 3) similarity that takes the mesh's frame to this one; None when the face
        cannot be followed (no mesh yet, or the flow lost it: the mesh should run)."""
        if self._grey is None or self._points is None:
            return None
        x0, y0, x1, y1 = self._region
        origin = np.array([x0, y0], np.float32)
        found = None
        if frame.shape == self._shape:
            current = grey(frame[y0:y1, x0:x1])
            found = similarity_step(self._grey, current, np.ascontiguousarray(self._points - origin))
        if found is None:
            self.stop()
            return None
        step, moved = found
        step[:, 2] += origin - step[:, :2] @ origin  # region coordinates -> frame coordinates
        self._total = np.hstack([step[:, :2] @ self._total[:, :2], step[:, :2] @ self._total[:, 2:] + step[:, 2:]])
        self._look_around(frame, moved + origin)  # may stop: then the next frame is not followed
        return self._total


def moved_landmarks(landmarks: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """(N, 3) landmarks taken by a (2, 3) similarity: x, y moved, depth scaled with the face."""
    out = np.asarray(landmarks, np.float32).copy()
    out[:, :2] = landmarks[:, :2] @ similarity[:, :2].T + similarity[:, 2]
    out[:, 2] *= float(np.hypot(*similarity[:, 0]))
    return out


def moved_box(box: tuple[float, float, float, float], similarity: np.ndarray) -> tuple[float, float, float, float]:
    """An upright box (x0, y0, x1, y1) taken by a (2, 3) similarity: its centre moved, its
    sides scaled (the turn of a few frames between meshes barely changes an upright box)."""
    x0, y0, x1, y1 = box
    cx, cy = similarity[:, :2] @ np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + similarity[:, 2]
    half_w, half_h = np.hypot(*similarity[:, 0]) * np.array([x1 - x0, y1 - y0]) / 2
    return float(cx - half_w), float(cy - half_h), float(cx + half_w), float(cy + half_h)
