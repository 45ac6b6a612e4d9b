"""The head-pose network (`inference.face.pose` runs its ONNX export): a small CNN regressor
from the encoder's face crop to yaw, pitch and roll."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from freeavatar_server.inference.face.pose import META_KEY, PoseConfig
from freeavatar_server.training.face.model import load_checkpoint, write_onnx_config


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
    write_onnx_config(path, META_KEY, config)
