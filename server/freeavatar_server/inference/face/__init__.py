"""Face finding for the live pipeline: a learned single-face localiser (ONNX, trained on the
synthetic world), OpenCV's Haar cascade as a second opinion on real photographs, per-actor
tracking, the crop the expression encoder expects, and the head pose read from that crop.

    tracker = FaceTracker()                  # one per actor; FaceLocaliser() may be shared
    obs = tracker.update(frame)              # FaceObservation | None
    if obs: crop = crop_face(frame, obs.box, 96)
    yaw, pitch, roll = HeadPoseEstimator().estimate(crop[None])[0]   # shared, like the localiser
"""

from freeavatar_server.inference.face.crop import crop_face, crop_square
from freeavatar_server.inference.face.detection import Detection, LocaliserConfig
from freeavatar_server.inference.face.haar import HaarFaceFinder
from freeavatar_server.inference.face.localiser import DEFAULT_MODEL, FaceLocaliser
from freeavatar_server.inference.face.pose import HeadPoseEstimator, PoseConfig
from freeavatar_server.inference.face.tracker import (
    FaceObservation,
    FaceTracker,
    SmoothingConfig,
    TrackerConfig,
)

__all__ = [
    "DEFAULT_MODEL",
    "Detection",
    "FaceLocaliser",
    "FaceObservation",
    "FaceTracker",
    "HeadPoseEstimator",
    "HaarFaceFinder",
    "LocaliserConfig",
    "PoseConfig",
    "SmoothingConfig",
    "TrackerConfig",
    "crop_face",
    "crop_square",
]
