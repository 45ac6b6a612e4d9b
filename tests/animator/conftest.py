"""Tiny frozen parts for animator tests: a random small encoder checkpoint, tiny renderers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from freeavatar_server.encoder.model import ExpressionEncoder, ModelConfig
from freeavatar_server.renderer.model import NeuralRenderer, RendererConfig
from freeavatar_server.synth.avatars import BUILTIN_AVATARS

TINY_ENCODER = ModelConfig(img_size=16, patch=8, dim=32, depth=1, heads=2, mlp_ratio=2.0,
                           decoder_dim=32, decoder_depth=1, decoder_heads=2)


@pytest.fixture
def tiny_encoder_path(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    encoder = ExpressionEncoder(TINY_ENCODER)
    path = tmp_path / "encoder.pt"
    torch.save({"stage": "triplet", "model_config": TINY_ENCODER.to_dict(), "model": encoder.state_dict()}, path)
    return path


def tiny_renderer(name: str, seed: int = 0) -> NeuralRenderer:
    torch.manual_seed(seed)
    spec = BUILTIN_AVATARS[name].spec
    return NeuralRenderer(RendererConfig(
        n_controls=len(spec.controls),
        control_min=tuple(c.min for c in spec.controls),
        control_max=tuple(c.max for c in spec.controls),
        image_size=16, width=4,
    )).eval()
