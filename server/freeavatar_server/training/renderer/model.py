"""The neural renderer: a DCGAN-style decoder from an avatar's rig vector to its image.

It stands in for the studio's game engine wherever a gradient is needed: the animator learns by
rendering its predicted rig through this network (frozen) into the expression encoder.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from freeavatar_server.files import write_atomically


@dataclass(frozen=True)
class RendererConfig:
    n_controls: int
    control_min: tuple[float, ...]  # each control's range: rigs are normalised to [0, 1]
    control_max: tuple[float, ...]
    image_size: int = 64  # a power of two, at least 8
    width: int = 16  # channels at full resolution; doubles at each halving, capped at 8x


class NeuralRenderer(nn.Module):
    def __init__(self, config: RendererConfig) -> None:
        super().__init__()
        if config.image_size < 8 or config.image_size & (config.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {config.image_size}")
        self.config = config
        self.register_buffer("lo", torch.tensor(config.control_min, dtype=torch.float32))
        self.register_buffer("span", torch.tensor(config.control_max, dtype=torch.float32) - self.lo)
        n_ups = config.image_size.bit_length() - 3  # 4x4 -> image_size
        channels = [min(config.width * 2**i, config.width * 8) for i in reversed(range(n_ups + 1))]
        self.stem = nn.Sequential(
            nn.Linear(config.n_controls, 256),
            nn.ReLU(),
            nn.Linear(256, channels[0] * 16),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(channels, channels[1:], strict=False):
            # Upsample + conv rather than transposed conv: no checkerboard artefacts.
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Conv2d(channels[-1], 3, 3, padding=1)
        self._c0 = channels[0]

    def forward(self, rig: torch.Tensor) -> torch.Tensor:
        """(B, n_controls) rig values in their own ranges -> (B, 3, S, S) images in [0, 1]."""
        x = self.stem((rig - self.lo) / self.span)
        x = self.body(x.view(-1, self._c0, 4, 4))
        return torch.sigmoid(self.head(x))


def save_renderer(model: NeuralRenderer, path: Path, metrics: dict[str, float]) -> None:
    """The config travels inside the checkpoint, so loading needs nothing else. Written whole
    or not at all (files.py): torch.save straight to a file on a full disk leaves it truncated
    and raises an error that does not say the disk is full."""
    buffer = io.BytesIO()
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict(), "metrics": metrics}, buffer)
    write_atomically(path, buffer.getvalue())


def load_renderer(path: Path) -> NeuralRenderer:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = checkpoint["config"]
    config["control_min"] = tuple(config["control_min"])
    config["control_max"] = tuple(config["control_max"])
    model = NeuralRenderer(RendererConfig(**config))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
