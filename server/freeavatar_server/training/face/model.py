"""The face localiser network: a tiny fully convolutional CenterNet/FCOS-style detector.

Input: an RGB frame (any size that is a multiple of 8) scaled to [-1, 1]. Output at stride 8:
a face-centre logit map and, per cell, the log distances from the cell centre to the four box
edges (left, top, right, bottom), in units of the stride. One face per actor stream, so decoding
is "take the strongest cell": no NMS, no anchors. Dilated convolutions give the stride-8 cells a
receptive field larger than the whole 160x120 input, so one cell can size a face that fills the
frame.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from freeavatar_server.inference.face.detection import LocaliserConfig


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FaceLocaliserNet(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, 5, H/8, W/8): centre logit, then log(l, t, r, b / stride)."""

    def __init__(self, config: LocaliserConfig) -> None:
        super().__init__()
        w1, w2, w3 = config.widths
        layers = [_conv(3, w1, 2), _conv(w1, w2, 2), _conv(w2, w3, 2)]
        cin = w3
        for d in config.context:
            layers.append(_conv(cin, config.context_width, dilation=d))
            cin = config.context_width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 5, 1)
        # Start with "no face anywhere" (CenterNet's prior) so early training is stable.
        nn.init.constant_(self.head.bias[:1], -4.0)
        nn.init.constant_(self.head.bias[1:], math.log(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def save_checkpoint(model: nn.Module, config, path: Path) -> None:
    """The face package's torch checkpoint (localiser and head pose): the state dict with the
    config JSON inside, so the file alone rebuilds the network."""
    torch.save({"config": config.to_json(), "state_dict": model.state_dict()}, path)


def load_checkpoint(path: Path, config_type, net_type):  # -> tuple[net, config]
    """(network in eval mode, its config) from a `save_checkpoint` file."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    config = config_type.from_json(ckpt["config"])
    model = net_type(config)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), config


def write_onnx_config(path: Path, key: str, config) -> None:
    """Put the config JSON into an exported graph's metadata, so the .onnx file alone is enough
    to run it."""
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, config.to_json()
    onnx.save(proto, str(path))


def load_localiser(path: Path) -> tuple[FaceLocaliserNet, LocaliserConfig]:
    return load_checkpoint(path, LocaliserConfig, FaceLocaliserNet)


def export_onnx(model: FaceLocaliserNet, config: LocaliserConfig, path: Path) -> None:
    """ONNX with dynamic height/width (full frames and tracking windows share one graph) and the
    config JSON in the model's metadata, so the .onnx file alone is enough to run it."""
    model = model.eval()
    w, h = config.full_input
    dummy = torch.zeros(1, 3, h, w)
    torch.onnx.export(
        model, (dummy,), str(path), input_names=["image"], output_names=["maps"],
        dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                      "maps": {0: "batch", 2: "rows", 3: "cols"}},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    write_onnx_config(path, "freeavatar_face_config", config)
