"""The live path's face front end: MediaPipe's Face Landmarker (BlazeFace, the 478-point mesh,
the 52 ARKit blendshapes) tracking the actor's face, with the synthetic-trained localiser as a
second detector, and the face box the expression encoder's crop is cut from.

The encoder was trained on crops framed from the synthetic world's face box (brow to chin, ear
to ear: `inference.face.crop`). The mesh gives that box through a linear map of its landmarks,
fitted on synthetic faces in a frame centred on the eyes and scaled by their distance (so the
map holds at any position and size): `training.face.mesh_box_fit`, held-out IoU with the true
box 0.88. On real faces the mesh is what finds the face; the localiser only steps in when
BlazeFace sees no face the mesh confirms (it finds the synthetic world's small faces, which the
short-range BlazeFace misses), and the mesh confirms its proposals too. With each mesh a
real-face emotion classifier reads the face (`inference.face.emotion`); the live path guards the
smile and lowered-brow blendshapes, and the encoder's units the animators read, with that
reading (MediaPipe reads a crying mouth as a smile and lowers a laughing face's brows). With a
`JawLift`, each mesh's jawOpen is raised to what the mesh shows of the lips
(`inference.face.jaw`; the live path's front end has one, `FaceFront()` alone reads MediaPipe's
own).

    front = FaceFront()                      # shared by a worker's actors
    track = front.track()                    # one per actor stream
    face = track.update(frame)               # FaceObservation | None
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from freeavatar_server.inference.face.emotion import EmotionReader
from freeavatar_server.inference.face.flow import FaceFlow, moved_box, moved_landmarks
from freeavatar_server.inference.face.jaw import JawLift
from freeavatar_server.inference.face.localiser import FaceLocaliser
from freeavatar_server.inference.face_landmarker import FaceLandmarker, FaceRoi, FaceTrack
from freeavatar_server.inference.shipped import MESH_FACE_BOX

# mesh landmarks: forehead top, chin, cheek extremes, nose tip, eye corners, mouth corners
BOX_LANDMARKS = (10, 152, 234, 454, 1, 33, 263, 61, 291, 133, 362)
LOCALISER_MIN_CONFIDENCE = 0.3  # below this its strongest cell is background: no mesh run
LOCALISER_ROI_SCALE = 1.3  # the mesh's region around a localiser box (swept 1.15-2.2 on synthetic frames)


def eye_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre between the eyes, distance between the eye centres) in frame pixels."""
    xy = np.asarray(landmarks, np.float64)[:, :2]
    right, left = (xy[33] + xy[133]) / 2, (xy[263] + xy[362]) / 2
    return (right + left) / 2, max(float(np.linalg.norm(left - right)), 1e-6)


def box_features(landmarks: np.ndarray) -> np.ndarray:
    """What the face-box map reads from a mesh, in eye-frame units."""
    centre, scale = eye_frame(landmarks)
    xy = (np.asarray(landmarks, np.float64)[:468, :2] - centre) / scale
    return np.concatenate([xy.min(0), xy.max(0), xy[list(BOX_LANDMARKS)].ravel(), [1.0]])


@dataclass(frozen=True)
class MeshFaceBox:
    """Mesh landmarks -> the synthetic world's face box, a linear map in eye-frame units."""

    weights: np.ndarray  # (features, 4)

    @classmethod
    def load(cls, path: Path = MESH_FACE_BOX) -> MeshFaceBox:
        with np.load(path) as data:
            return cls(data["weights"])

    def box(self, landmarks: np.ndarray) -> np.ndarray:
        """(4,) float32 x0, y0, x1, y1 in frame pixels."""
        centre, scale = eye_frame(landmarks)
        unit = box_features(landmarks) @ self.weights
        return np.concatenate([unit[:2] * scale + centre, unit[2:] * scale + centre]).astype(np.float32)


@dataclass(frozen=True)
class FaceObservation:
    """The actor's face in one frame."""

    box: tuple[float, float, float, float]  # the face box the encoder's crop is cut from
    confidence: float  # the mesh's face presence probability
    landmarks: np.ndarray  # (478, 3) float32 frame pixels
    blendshapes: np.ndarray  # (52,) float32 in [0, 1], freeavatar.arkit.ARKIT_BLENDSHAPES order
    detected: bool  # a detector ran for this frame (the track was lost or new)
    emotions: np.ndarray | None = None  # (7,) the emotion classifier's reading of the mesh's frame


@dataclass(frozen=True)
class LocaliserProposal:
    """The localiser's face as a region for the mesh to confirm (a `SecondDetector`)."""

    localiser: FaceLocaliser

    def __call__(self, frame: np.ndarray) -> FaceRoi | None:
        found = self.localiser.detect(frame)
        if found.confidence < LOCALISER_MIN_CONFIDENCE:
            return None
        x0, y0, x1, y1 = (float(v) for v in found.box)
        side = max(x1 - x0, y1 - y0) * LOCALISER_ROI_SCALE
        return FaceRoi(np.array([(x0 + x1) / 2, (y0 + y1) / 2]), side, 0.0)


class FaceFront:
    """The models, shared by every actor a worker serves (ONNX Runtime sessions are)."""

    def __init__(
        self, threads: int = 1, face_box: MeshFaceBox | None = None, emotions: bool = True, jaw_lift: JawLift | None = None,
    ) -> None:  # fmt: skip
        self.landmarker = FaceLandmarker(threads=threads)
        self.proposal = LocaliserProposal(FaceLocaliser(threads=threads))
        self.face_box = face_box or MeshFaceBox.load()
        # the emotion classifier reads each mesh's face (what the live path's emotion guard needs)
        self.emotions = EmotionReader(threads=threads) if emotions else None
        # each mesh's jawOpen raised to what it shows of the lips (inference.face.jaw); None:
        # MediaPipe's own
        self.jaw_lift = jaw_lift

    def warm_up(self) -> None:
        """Run every graph once: ONNX Runtime optimises each on its first run."""
        blank = np.zeros((480, 640, 3), np.uint8)
        self.proposal(blank)
        self.landmarker.detect(blank)
        mesh = self.landmarker.run_mesh(blank, FaceRoi(np.array([320.0, 240.0]), 200.0, 0.0))
        self.landmarker.blendshapes(mesh.landmarks)
        if self.emotions is not None:
            self.emotions.read(blank, mesh.landmarks)

    def mesh_track(self) -> FaceTrack:
        """A track of the mesh alone (no face box)."""
        return FaceTrack(self.landmarker, second_detector=self.proposal)

    def track(self, min_interval_s: float = 0.0, phase: float = 0.0) -> FrontTrack:
        """A stream's track; with `min_interval_s` the mesh runs at most that often (frames in
        between, by their capture times, get the last mesh's reading, the face followed to them
        by optical flow). `phase` in [0, 1) shifts the
        stream's mesh frames by that share of the interval, so that actors who started together
        do not all run their meshes on the same tick."""
        return FrontTrack(self.mesh_track(), self.face_box, min_interval_s, phase, self.emotions, self.jaw_lift)


class FrontTrack:
    """One actor stream's face: not thread-safe, one per stream."""

    def __init__(
        self, track: FaceTrack, face_box: MeshFaceBox, min_interval_s: float = 0.0, phase: float = 0.0,
        emotions: EmotionReader | None = None, jaw_lift: JawLift | None = None,
    ) -> None:  # fmt: skip
        self._track = track
        self._face_box = face_box
        self._emotions = emotions
        self._jaw_lift = jaw_lift
        self._min_interval_s = min_interval_s
        self._phase = phase
        self._meshed: FaceObservation | None = None  # the last mesh's reading
        self._last: FaceObservation | None = None  # that reading, followed to the last frame
        self._flow = FaceFlow()
        self._last_time_s = -math.inf
        self._due_s = -math.inf  # the capture time from which the mesh runs again
        self._ran_at = -math.inf  # time.monotonic() of the last mesh run
        self.reused = 0  # frames answered with the last mesh's reading (followed), not their own
        # how many times longer than min_interval_s the mesh waits now: its worker's pace
        # under load (live.analysis.LoadPace), 1 when it keeps up
        self.slowdown = 1.0

    @property
    def tracking(self) -> bool:
        """It has a reading to go on (the face was found and not lost since)."""
        return self._last is not None

    @property
    def interval_s(self) -> float:
        """How long the mesh waits between runs now."""
        return self._min_interval_s * self.slowdown

    @property
    def detector_runs(self) -> int:
        return self._track.detector_runs

    def update(self, frame: np.ndarray, time_s: float | None = None) -> FaceObservation | None:
        """(H, W, 3) uint8 RGB -> the face, or None when there is none. `time_s`, the frame's
        capture time, lets a frame soon after the last mesh take its reading, followed to it
        (`min_interval_s`)."""
        face, due = self.read(frame, time_s)
        return self.refresh(frame, time_s) if due else face

    def read(self, frame: np.ndarray, time_s: float | None = None) -> tuple[FaceObservation | None, bool]:
        """The face for this frame as fast as it can be had, and whether the mesh is due.

        With a reading to go on, that reading with its landmarks and box moved to where the
        face is in this frame (`inference.face.flow`; the blendshapes are the mesh's), and `due`
        says the mesh should run on this frame (`refresh`) for the frames after it: the live
        path answers first and runs the mesh after, so the mesh is never on a frame's way. The
        mesh is due early when the flow loses the face. Without a reading (a new or lost
        track) the mesh runs now, as the frame has no face otherwise."""
        if self._meshed is None:
            return self.refresh(frame, time_s), False
        moved = self._flow.follow(frame)
        if moved is not None:
            landmarks = moved_landmarks(self._meshed.landmarks, moved)
            box = moved_box(self._meshed.box, moved)
            self._last = replace(self._meshed, box=box, landmarks=landmarks, detected=False)
        return self._last, moved is None or not self._reusable(time_s)

    def _reusable(self, time_s: float | None) -> bool:
        # The worker's own clock must agree: a sender whose timestamps stand still (or run
        # slow) still gets a fresh reading at least every two intervals.
        reuse = (
            time_s is not None
            and self._last_time_s <= time_s < self._due_s
            and time.monotonic() - self._ran_at < 2 * self.interval_s
        )
        self.reused += reuse
        return reuse

    def refresh(self, frame: np.ndarray, time_s: float | None = None) -> FaceObservation | None:
        """Run the mesh on this frame: the reading from now on."""
        self._ran_at = time.monotonic()
        if self._last is not None and self._last is not self._meshed:
            self._track.follow(self._last.landmarks)  # look where the flow last saw the face
        reading = self._track.update(frame)
        if reading is None:
            self._meshed = self._last = None
            self._flow.stop()
            return None
        x0, y0, x1, y1 = (float(v) for v in self._face_box.box(reading.landmarks))
        emotions = self._emotions.read(frame, reading.landmarks) if self._emotions is not None else None
        blendshapes = reading.blendshapes if self._jaw_lift is None else self._jaw_lift.lift(reading.blendshapes, reading.landmarks)
        self._meshed = self._last = FaceObservation(
            (x0, y0, x1, y1), reading.confidence, reading.landmarks, blendshapes, reading.detected, emotions
        )
        self._flow.start(frame, reading.landmarks)
        if time_s is None:
            self._last_time_s = self._due_s = -math.inf
        else:
            # due a little early (a tenth of the interval): frames at exactly the interval,
            # such as every other frame at 30 fps for 15 runs a second, then run as meant
            first = self._last_time_s == -math.inf
            wait = self.interval_s * (1.0 - (self._phase if first else 0.0) - 0.1)
            self._last_time_s, self._due_s = time_s, time_s + wait
        return self._last
