"""How much of each avatar's rig an input feature carries: a supervised ceiling for animators.

    .venv/bin/python benchmarks/animator_ceiling.py --work /work/runs/animator2 [--json]

A DIAGNOSTIC, not a model: it reads the synthetic ground truth of the training actors, which no
animator may. For every built-in avatar it predicts a held-out actor's rig as the mean
ground-truth rig of its 20 nearest training actors in feature space (the expression embedding,
or the geometry baseline's measurements), and reports the retargeting error
`freeavatar eval animator` uses, beside the neutral pose. An animator trained without labels on
the same feature should not expect to beat this; if the ceiling is near neutral, the feature,
not the animator, is what limits retargeting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from freeavatar_server.animator.encoding import ENCODER_FILE, embed_images, load_frozen_encoder
from freeavatar_server.animator.evaluate import build_heldout, geometry_inputs, retarget_error
from freeavatar_server.animator.model import AvatarRig
from freeavatar_server.synth.avatars import BUILTIN_AVATARS

NEIGHBOURS = 20


def nearest_mean(train: np.ndarray, targets: np.ndarray, query: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Mean target of each query's k nearest training rows (squared L2)."""
    dist = (query**2).sum(1)[:, None] - 2 * query @ train.T + (train**2).sum(1)[None]
    return targets[np.argpartition(dist, k, axis=1)[:, :k]].mean(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="animator_prepare.py's output (actors.npz)")
    p.add_argument("--encoder", type=Path, default=None, help=f"default: <work>/models/{ENCODER_FILE}")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    encoder = load_frozen_encoder(args.encoder or args.work / "models" / ENCODER_FILE)
    actors = np.load(args.work / "actors.npz")
    held = build_heldout(encoder)
    features = {
        "embedding": (embed_images(encoder, actors["train_images"]).numpy(), held.embeddings.numpy()),
        "geometry": (geometry_inputs(actors["train_images"]).numpy(), held.geometry.numpy()),
    }
    report: dict[str, dict[str, float]] = {}
    for name, avatar in BUILTIN_AVATARS.items():
        rig = AvatarRig.from_spec(avatar.spec)
        truth = avatar.expected_rig(held.action_units)
        train_rigs = avatar.expected_rig(actors["train_aus"])
        row = {"neutral": retarget_error(avatar.neutral(len(truth)), truth, rig)}
        for kind, (train, query) in features.items():
            row[f"{kind}_knn{NEIGHBOURS}"] = retarget_error(avatar.clip(nearest_mean(train, train_rigs, query)), truth, rig)
        report[name] = {k: round(v, 4) for k, v in row.items()}
    if args.json:
        print(json.dumps({"avatars": report, "neighbours": NEIGHBOURS, "heldout_actors": len(truth)}))
        return
    for name, row in report.items():
        print(name, "  ".join(f"{k} {v:.4f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
