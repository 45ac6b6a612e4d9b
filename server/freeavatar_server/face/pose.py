"""Head pose from a face crop: a small CNN regressor (trained on the synthetic world) and its
ONNX Runtime wrapper.

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
import torch
import torch.nn.functional as F
from torch import nn

from freeavatar_server.face.model import load_checkpoint, preprocess, write_onnx_config

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "head_pose.onnx"
_META_KEY = "freeavatar_pose_config"


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


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


def _stage(cin: int, cout: int, refined: bool) -> nn.Sequential:
    """A stride-2 conv, then (if refined) a 3x3 conv at the new resolution."""
    return nn.Sequential(*_conv(cin, cout, 2), *(_conv(cout, cout, 1) if refined else []))


class HeadPoseNet(nn.Module):
    """(B, 3, S, S) crop in [-1, 1] -> (B, 3) yaw, pitch, roll in degrees.

    The head flattens the last 4x4 feature map instead of pooling it: where the nose and eyes
    sit in the crop is exactly what pose is, and global pooling would throw that away.
    """

    def __init__(self, config: PoseConfig) -> None:
        super().__init__()
        # decided here, not per call, so the exported graph has no data-dependent branch
        self.resize = config.crop_input != config.net_input
        self.net_input = config.net_input
        layers, cin = [], 3
        first_refined = len(config.widths) - config.refined_stages
        for i, width in enumerate(config.widths):
            layers.append(_stage(cin, width, refined=i >= first_refined))
            cin = width
        self.body = nn.Sequential(*layers)
        side = config.net_input // 2 ** len(config.widths)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * side * side, config.hidden), nn.ReLU(inplace=True),
            nn.Linear(config.hidden, 3),
        )  # fmt: skip
        self.register_buffer("scale", torch.tensor(config.pose_range_deg, dtype=torch.float32))

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        """Pose in units of the pose range (what the loss sees)."""
        if self.resize:
            x = F.interpolate(x, size=(self.net_input, self.net_input), mode="bilinear",
                              align_corners=False, antialias=False)  # fmt: skip
        return self.head(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalised(x) * self.scale


def load_pose_model(path: Path) -> tuple[HeadPoseNet, PoseConfig]:
    return load_checkpoint(path, PoseConfig, HeadPoseNet)


def export_onnx(model: HeadPoseNet, config: PoseConfig, path: Path) -> None:
    """ONNX (dynamic batch, crop_input x crop_input input) with the config in its metadata."""
    model = model.eval()
    dummy = torch.zeros(1, 3, config.crop_input, config.crop_input)
    torch.onnx.export(
        model, (dummy,), str(path), input_names=["crop"], output_names=["pose_deg"],
        dynamic_axes={"crop": {0: "batch"}, "pose_deg": {0: "batch"}},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    write_onnx_config(path, _META_KEY, config)


class HeadPoseEstimator:
    """The shipped head-pose model on ONNX Runtime. Stateless: one instance serves every actor
    (ONNX Runtime sessions are safe to share across threads)."""

    def __init__(self, model_path: Path | str | None = None, threads: int = 1) -> None:
        from freeavatar_server.face.localiser import _session

        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        if not path.exists():
            raise FileNotFoundError(
                f"head pose model not found at {path}; train it with "
                "`python -m freeavatar_server.face.pose_train --ship`"
            )
        self.session = _session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config = PoseConfig.from_json(meta[_META_KEY])

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
