"""The live path's face models: the front end (MediaPipe's mesh and blendshapes, with the
synthetic-trained localiser as a second detector), the crop the expression encoder expects, and
the head pose read from that crop.

    front = FaceFront()                      # shared by a worker's actors
    track = front.track()                    # one per actor
    face = track.update(frame)               # FaceObservation | None
    if face: crop = crop_face(frame, face.box, 96)
    yaw, pitch, roll = HeadPoseEstimator().estimate(crop[None])[0]
"""

from freeavatar_server.inference.face.crop import crop_face, crop_square
from freeavatar_server.inference.face.detection import Detection, LocaliserConfig
from freeavatar_server.inference.face.front import FaceFront, FaceObservation, FrontTrack
from freeavatar_server.inference.face.localiser import DEFAULT_MODEL, FaceLocaliser
from freeavatar_server.inference.face.pose import HeadPoseEstimator, PoseConfig

__all__ = [
    "DEFAULT_MODEL",
    "Detection",
    "FaceFront",
    "FaceLocaliser",
    "FaceObservation",
    "FrontTrack",
    "HeadPoseEstimator",
    "LocaliserConfig",
    "PoseConfig",
    "crop_face",
    "crop_square",
]
