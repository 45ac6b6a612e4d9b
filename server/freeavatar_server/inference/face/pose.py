"""Head pose from a face crop: a small CNN regressor (trained on the synthetic world:
`training.face.pose_model`) on ONNX Runtime.

Input: the square crop the pipeline already cuts for the expression encoder (`crop_face(frame,
box, 96)`, framed the way `render_faces` frames its crops), RGB uint8. The network shrinks it to
64 px inside the graph (pose needs the layout of the face, not its fine detail), so callers
feed whatever crop the encoder gets and pay for one resize they would otherwise do themselves.

Output: yaw, pitch, roll in degrees, in the synthetic world's convention, which is what rig
frames carry (proto/freeavatar/v1/rig.proto `HeadPose`):

    +yaw   the face turns towards the image's right (the actor's own left)
    +pitch the face tilts up
    +roll  the head rotates clockwise in the image (the crown towards the image's right)
    (0, 0, 0) is the face looking straight into the camera, upright.

These are not the right-hand-rule rotations of any camera frame one would pick by default: in
ARKit's / OpenGL's (x to the image right, y up, z towards the camera) +yaw is a right-handed
turn about y, but +pitch and +roll are left-handed turns about x and z. The three are
right-handed only in the frame (actor's right, up, actor's back). So the proto documents the
convention by what the image shows; the engine outputs start from it (outputs/vmc.py turns it
into a Unity rotation, outputs/livelink.py sends it in radians as it is).

    estimator = HeadPoseEstimator()                 # shipped model, one thread
    yaw, pitch, roll = estimator.estimate(crop[None])[0]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from freeavatar_server.inference.face.detection import preprocess
from freeavatar_server.inference.onnx import open_session
from freeavatar_server.inference.shipped import HEAD_POSE_ONNX as DEFAULT_MODEL

META_KEY = "freeavatar_pose_config"  # the config JSON in the graph's metadata


@dataclass(frozen=True)
class PoseConfig:
    """Architecture and input conventions; saved in the checkpoint and the ONNX metadata."""

    crop_input: int = 96  # side of the crop the pipeline feeds (the encoder's input)
    net_input: int = 64  # the graph resizes to this before the first convolution
    widths: tuple[int, ...] = (16, 32, 48, 64)  # one stride-2 stage each: 64 -> 4 px
    # the last this-many stages add a second 3x3 conv; the large early maps stay single-conv,
    # where a second conv would cost most of the inference budget
    refined_stages: int = 2
    hidden: int = 64
    # the synthetic world's pose range (sample_poses): the network predicts pose in these units
    pose_range_deg: tuple[float, float, float] = (30.0, 20.0, 20.0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> PoseConfig:
        raw = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


class HeadPoseEstimator:
    """The shipped head-pose model on ONNX Runtime. Stateless: one instance serves every actor
    (ONNX Runtime sessions are safe to share across threads)."""

    def __init__(self, model_path: Path | str | None = None, threads: int = 1) -> None:
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        self.session = open_session(path, threads, made_by="`python -m freeavatar_server.training.face.pose_train --ship`")
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config = PoseConfig.from_json(meta[META_KEY])

    @property
    def size(self) -> int:
        """The crop side the model expects."""
        return self.config.crop_input

    def estimate(self, crops: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 crops (S = `size`) -> (B, 3) float32 yaw, pitch, roll degrees."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"crops must be (B, {self.size}, {self.size}, 3), got {crops.shape}")
        return self.session.run(None, {"crop": preprocess(crops)})[0].astype(np.float32)
