"""Prepare what the animator experiments need and a studio would already have: each built-in
avatar's neural renderer (trained on reference-rendered (rig, image) samples, never on actor
ground truth), and unlabeled actor crops/clips (train) plus held-out actors (evaluation).

    .venv/bin/python research/animator_prepare.py --out runs/animator
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from freeavatar_server.avatars.sampling import propose_rig_vectors
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.data import (
    HELDOUT_IDENTITY_OFFSET,
    TRAIN_IDENTITY_OFFSET,
    actor_clips,
    actor_images,
)
from freeavatar_server.training.renderer.evaluate import render_in_batches
from freeavatar_server.training.renderer.model import save_renderer
from freeavatar_server.training.renderer.train import RendererTrainConfig, fit_renderer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=150.0)
    parser.add_argument("--what", default="renderers,actors")
    parser.add_argument("--size", type=int, default=96, help="actor crop size: the encoder's input size")
    parser.add_argument("--avatars", default=",".join(BUILTIN_AVATARS), help="whose renderers to train")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if "actors" in args.what:
        size = args.size
        train = actor_images(3000, identity_offset=TRAIN_IDENTITY_OFFSET, n_identities=300, seed=11, size=size)
        held = actor_images(600, identity_offset=HELDOUT_IDENTITY_OFFSET, n_identities=60, seed=12, size=size)
        clips = actor_clips(60, 12, identity_offset=TRAIN_IDENTITY_OFFSET + 500, seed=13, fps=10.0, size=size)
        np.savez(args.out / "actors.npz", train_images=train.images, train_aus=train.action_units,
                 held_images=held.images, held_aus=held.action_units,
                 clip_images=clips.images, clip_aus=clips.action_units)
        print("actors done", flush=True)
    if "renderers" in args.what:
        for name in args.avatars.split(","):
            avatar = BUILTIN_AVATARS[name]
            config = RendererTrainConfig(time_budget_s=args.budget, steps=100000)
            rigs = propose_rig_vectors(avatar.spec, args.samples, seed=0)
            fit = fit_renderer(avatar.spec, rigs, render_in_batches(avatar, rigs, 64), config)
            save_renderer(fit.model, args.out / f"renderer_{name}.pt", fit.metrics)
            print(name, json.dumps(fit.metrics), flush=True)


if __name__ == "__main__":
    main()
