"""MediaPipe's jawOpen raised to what its own mesh shows of the lips.

MediaPipe's blendshape model reads a mouth that is plainly open, but not wide, as all but shut:
jawOpen 0.01-0.06 on seven of the real-face set's eleven open mouths, and on synthetic actors
a median of 0.008 with the jaw a fifth to two fifths of the way down. Its mesh sees those
mouths open: the gap between the inner lips' centres, in eye-corner distances (3-D, so that a
turned head does not widen it), follows the synthetic actors' jaw drop (AU26, the shape ARKit
calls jawOpen) at r 0.84, where its jawOpen follows at 0.59. Served jawOpen is raised to the
line of jaw drop on that gap wherever MediaPipe reads less, so an open mouth opens the
avatar's and a wide one keeps MediaPipe's own reading.

The line is a least-squares fit on synthetic clips of training-range actors
(`research/jaw_lift.py`); nothing here was chosen on real faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freeavatar.arkit import ARKIT_BLENDSHAPES

JAW_OPEN = ARKIT_BLENDSHAPES.index("jawOpen")
INNER_LIPS = (13, 14)  # mesh points at the middle of the upper and lower inner lip
EYE_CORNERS = (33, 263)  # the outer eye corners


def lip_gap(landmarks: np.ndarray) -> float:
    """(478, 3) mesh -> the inner lips' gap in eye-corner distances."""
    upper, lower = landmarks[INNER_LIPS[0]], landmarks[INNER_LIPS[1]]
    right, left = landmarks[EYE_CORNERS[0]], landmarks[EYE_CORNERS[1]]
    return float(np.linalg.norm(lower - upper) / max(float(np.linalg.norm(left - right)), 1e-6))


@dataclass(frozen=True)
class JawLift:
    intercept: float = -0.010  # jaw drop = intercept + slope x lip gap
    slope: float = 2.631

    def lift(self, blendshapes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The (52,) blendshapes with jawOpen raised to the line of the mesh's lip gap where it
        reads less (a new array)."""
        out = np.array(blendshapes, np.float32)
        line = float(np.clip(self.intercept + self.slope * lip_gap(landmarks), 0.0, 1.0))
        out[JAW_OPEN] = max(out[JAW_OPEN], line)
        return out
