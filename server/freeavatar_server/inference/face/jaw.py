"""MediaPipe's jawOpen raised to what its own mesh shows of the lips.

MediaPipe's blendshape model reads a mouth that is plainly open, but not wide, as all but shut:
jawOpen under 0.06 on six of the real-face set's eleven open mouths, and on synthetic actors
a median of 0.008 with the jaw a fifth to two fifths of the way down. Its mesh sees those
mouths open: the gap between the inner lips' centres, in eye-corner distances (3-D, so that a
turned head does not widen it), follows the synthetic actors' jaw drop (AU26, the shape ARKit
calls jawOpen) at r 0.84, where its jawOpen follows at 0.59. Each mesh's jawOpen is raised to
the line of jaw drop on that gap wherever MediaPipe reads less, so an open mouth opens the
avatar's and a wide one keeps MediaPipe's own reading. A smile also parts the lips, over closed
teeth, which the synthetic world never shows (its smiling actors' jaws are down too): the line
counts only as far as MediaPipe reads no smile, so a grin showing its teeth keeps its jaw shut
(MediaPipe's own smile, before the emotion guard: a crying mouth it reads as smiling keeps
MediaPipe's jawOpen too).

The line is a least-squares fit on synthetic clips of training-range actors
(`research/jaw_lift.py`); the smile's share is a rule with no parameter, added after seeing real
grins (the real set's astronaut among them). The front end lifts each mesh's reading (`FaceFront(jaw_lift=...)`), so that the
carry between meshes starts from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.inference.face.carry import SMILE_BLENDSHAPES
from freeavatar_server.inference.face_landmarker import LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS

JAW_OPEN = ARKIT_BLENDSHAPES.index("jawOpen")
INNER_LIPS = (13, 14)  # mesh points at the middle of the upper and lower inner lip
EYE_CORNERS = (RIGHT_EYE_CORNERS[0], LEFT_EYE_CORNERS[0])  # the outer eye corners


def lip_gap(landmarks: np.ndarray) -> float:
    """(478, 3) mesh -> the inner lips' gap in eye-corner distances."""
    upper, lower = landmarks[INNER_LIPS[0]], landmarks[INNER_LIPS[1]]
    right, left = landmarks[EYE_CORNERS[0]], landmarks[EYE_CORNERS[1]]
    return float(np.linalg.norm(lower - upper) / max(float(np.linalg.norm(left - right)), 1e-6))


@dataclass(frozen=True)
class JawLift:
    intercept: float = -0.010  # jaw drop = intercept + slope x lip gap
    slope: float = 2.631

    def __post_init__(self) -> None:
        if not (np.isfinite(self.intercept) and np.isfinite(self.slope)):
            raise ValueError(f"the line's intercept and slope must be finite, got {self.intercept}, {self.slope}")

    def lift(self, blendshapes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """One mesh's (52,) blendshapes with jawOpen raised to the line of its lip gap, times
        the share of a smile MediaPipe does not read, where it reads less (a new array)."""
        out = np.array(blendshapes, np.float32)
        line = float(np.clip(self.intercept + self.slope * lip_gap(landmarks), 0.0, 1.0))
        # a smile parts the lips over closed teeth, which the synthetic world never shows (its
        # smiles come with the jaw down): the line counts as far as MediaPipe reads no smile
        line *= 1.0 - float(np.clip(out[list(SMILE_BLENDSHAPES)].mean(), 0.0, 1.0))
        out[JAW_OPEN] = max(out[JAW_OPEN], line)
        return out
