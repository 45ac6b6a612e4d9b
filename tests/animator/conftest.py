"""Tiny frozen parts for animator tests: a random small encoder checkpoint, tiny renderers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.encoder.model import ExpressionEncoder, ModelConfig
from freeavatar_server.training.renderer.model import NeuralRenderer, RendererConfig

TINY_ENCODER = ModelConfig(img_size=16, patch=8, dim=32, depth=1, heads=2, mlp_ratio=2.0,
                           decoder_dim=32, decoder_depth=1, decoder_heads=2)


@pytest.fixture
def tiny_encoder_path(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    encoder = ExpressionEncoder(TINY_ENCODER)
    path = tmp_path / "encoder.pt"
    torch.save({"stage": "triplet", "model_config": TINY_ENCODER.to_dict(), "model": encoder.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def trained_robot_renderer() -> NeuralRenderer:
    """A tiny renderer that has learnt the robot a little (60 steps): its renders do depend on
    the rig, unlike a random one's."""
    from freeavatar_server.avatars.sampling import propose_rig_vectors
    from freeavatar_server.training.renderer.evaluate import render_in_batches
    from freeavatar_server.training.renderer.train import RendererTrainConfig, fit_renderer

    torch.manual_seed(0)
    avatar = BUILTIN_AVATARS["robot"]
    rigs = propose_rig_vectors(avatar.spec, 256, seed=0)
    config = RendererTrainConfig(image_size=16, width=4, steps=60, batch_size=32, evaluations=1)
    return fit_renderer(avatar.spec, rigs, render_in_batches(avatar, rigs, 16), config).model.eval()


def tiny_renderer(name: str, seed: int = 0) -> NeuralRenderer:
    torch.manual_seed(seed)
    spec = BUILTIN_AVATARS[name].spec
    return NeuralRenderer(RendererConfig(
        n_controls=len(spec.controls),
        control_min=tuple(c.min for c in spec.controls),
        control_max=tuple(c.max for c in spec.controls),
        image_size=16, width=4,
    )).eval()
