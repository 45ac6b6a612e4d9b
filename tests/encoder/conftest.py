"""Tiny real models and data for the encoder tests (seconds, not minutes)."""

from __future__ import annotations

import pytest

from freeavatar_server.training.encoder.model import ModelConfig
from freeavatar_server.training.encoder.train import TrainConfig

TINY_MODEL = ModelConfig(img_size=32, patch=8, dim=32, depth=1, heads=2, mlp_ratio=2.0, decoder_dim=32, decoder_depth=1, decoder_heads=2)


@pytest.fixture
def tiny_model() -> ModelConfig:
    return TINY_MODEL


def tiny_train_config(out_dir: str, **kw) -> TrainConfig:
    base = dict(
        out_dir=out_dir, model=TINY_MODEL, mae_steps=3, mae_batch=8, triplet_steps=3,
        triplet_batch=8, classifier_steps=3, classifier_batch=8, warmup=1, threads=1, log_every=1, val_every=3,
        val_triplets=0, ckpt_every=2,
    )
    base.update(kw)
    return TrainConfig(**base)
