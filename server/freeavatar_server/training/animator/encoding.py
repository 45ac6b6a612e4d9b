"""The frozen expression encoder as the animator uses it: which weights, and batch embedding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from freeavatar_server.training.animator.train import freeze
from freeavatar_server.training.encoder.evaluate import default_weights
from freeavatar_server.training.encoder.model import ExpressionEncoder, ModelConfig
from freeavatar_server.training.encoder.train import load_checkpoint, load_encoder

ENCODER_ENV = "FREEAVATAR_ANIMATOR_ENCODER"  # a .pt checkpoint to use instead of the default
ENCODER_FILE = "encoder.pt"  # the encoder an animator was trained with, saved beside it


def encoder_checkpoint(explicit: Path | None = None, paired: Path | None = None) -> Path:
    """Which encoder checkpoint to use, first found of: `explicit`, $FREEAVATAR_ANIMATOR_ENCODER,
    `paired` (the encoder an animator was trained with, kept beside it: an animator only
    understands the embedding space it was trained in), the shipped models/expression_encoder.pt."""
    chosen = explicit or (Path(os.environ[ENCODER_ENV]) if os.environ.get(ENCODER_ENV) else None)
    if chosen is None and paired is not None and paired.exists():
        chosen = paired
    path = chosen or default_weights().encoder
    if not path.exists():
        raise FileNotFoundError(
            f"no expression encoder at {path}: ship one (freeavatar encoder ship) or set {ENCODER_ENV}"
        )
    return path


def load_frozen_encoder(path: Path) -> ExpressionEncoder:
    """Eval mode, no parameter updates; gradients still flow through it to its input."""
    return freeze(load_encoder(path))


def save_encoder_copy(source: Path, destination: Path) -> None:
    """Weights-only copy of an encoder checkpoint (no optimiser state), loadable by load_encoder.
    It names its source by file name only, so that a copy made in another checkout is the same
    bytes."""
    ck = load_checkpoint(source)
    state = ck["model"]
    if ck["stage"] == "mae":
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    # Fill what an older checkpoint lacks (an MAE stage never trains the head) with the current
    # architecture's initial values, so the copy loads strictly.
    full = ExpressionEncoder(ModelConfig.from_dict(ck["model_config"])).state_dict()
    state = {**full, **{k: v for k, v in state.items() if k in full}}
    torch.save({"stage": "triplet", "step": ck.get("step"), "done": ck.get("done"),
                "model_config": ck["model_config"], "model": state, "source": Path(source).name}, destination)


@torch.no_grad()
def embed_images(encoder: nn.Module, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """(N, S, S, 3) uint8 at the encoder's size -> (N, 16) embeddings."""
    return read_images(encoder, images, batch, units=False)[0]


@torch.no_grad()
def read_images(
    encoder: nn.Module, images: np.ndarray, batch: int = 256, *, units: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, S, S, 3) uint8 -> (N, 16) embeddings and the (N, au_units) action-unit read-out
    (None for an encoder without one, or when `units` is False), from one pass of the encoder,
    as the live path's ONNX graph gives both."""
    size = encoder.cfg.img_size
    with_units = units and encoder.au_head is not None
    embeddings, read = [], []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).permute(0, 3, 1, 2).float() / 255
        if x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if with_units:
            embedding, unit = encoder(x, with_units=True)
            read.append(unit)
        else:
            embedding = encoder(x)
        embeddings.append(embedding)
    embedded = torch.cat(embeddings) if embeddings else torch.zeros(0, encoder.cfg.embed_dim)
    if not with_units:
        return embedded, None
    return embedded, torch.cat(read) if read else torch.zeros(0, encoder.cfg.au_units)
