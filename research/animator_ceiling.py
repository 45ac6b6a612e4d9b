"""How much of each avatar's rig an input feature carries: a supervised ceiling for animators.

    .venv/bin/python research/animator_ceiling.py --work runs/animator --encoder ENCODER [--labels 5,20,100] [--json]

A DIAGNOSTIC, not a model: it reads the synthetic ground truth of the training actors, which no
animator may. For every built-in avatar it predicts a held-out actor's rig from a feature (the
expression embedding, or the geometry baseline's measurements) in two ways: the mean
ground-truth rig of its 20 nearest training actors, and a small MLP fitted to the training
actors' rigs with the error's own L1 loss (a mean of neighbours pays for every control it leaves
slightly off rest; the L1 fit can learn to leave one at rest). It reports the retargeting error
`freeavatar eval animator` uses, beside the neutral pose. An animator trained without labels on
the same feature should not expect to beat this; if the ceiling is near neutral, the feature,
not the animator, is what limits retargeting. `--labels 5,20,100` also fits the MLP to only that
many labelled actors: what a handful of artist keyframes could teach on their own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.encoding import (
    ENCODER_FILE,
    embed_images,
    load_frozen_encoder,
)
from freeavatar_server.training.animator.evaluate import (
    build_heldout,
    geometry_inputs,
    retarget_correlation,
    retarget_error,
)
from freeavatar_server.training.animator.model import AvatarRig

NEIGHBOURS = 20
REGRESSION_STEPS = 1500


def nearest_mean(train: np.ndarray, targets: np.ndarray, query: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Mean target of each query's k nearest training rows (squared L2)."""
    dist = (query**2).sum(1)[:, None] - 2 * query @ train.T + (train**2).sum(1)[None]
    return targets[np.argpartition(dist, k, axis=1)[:, :k]].mean(1)


def l1_regression(train: np.ndarray, targets: np.ndarray, query: np.ndarray, span: np.ndarray, seed: int = 0) -> np.ndarray:
    """An MLP (width 128) from feature to rig, fitted with the retargeting error itself (L1 in
    units of each control's range) on the training actors; predicts the queries' rigs."""
    torch.manual_seed(seed)
    x, q = torch.from_numpy(train).float(), torch.from_numpy(query).float()
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, q = (x - mean) / std, (q - mean) / std
    y = torch.from_numpy(targets / span).float()
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.GELU(), torch.nn.Linear(128, 128),
                              torch.nn.GELU(), torch.nn.Linear(128, y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(REGRESSION_STEPS):
        pick = torch.randint(len(x), (256,), generator=g)
        loss = (net(x[pick]) - y[pick]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(q).numpy() * span


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="animator_prepare.py's output (actors.npz)")
    p.add_argument("--encoder", type=Path, default=None, help=f"default: <work>/models/{ENCODER_FILE}")
    p.add_argument("--labels", default="", help="also fit the MLP to only this many labelled actors, e.g. 5,20,100 (3 draws each)")
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
        span = rig.span
        row = {"neutral": retarget_error(avatar.neutral(len(truth)), truth, rig)}
        for kind, (train, query) in features.items():
            row[f"{kind}_knn{NEIGHBOURS}"] = retarget_error(avatar.clip(nearest_mean(train, train_rigs, query)), truth, rig)
            fitted = avatar.clip(l1_regression(train, train_rigs, query, span))
            row[f"{kind}_l1_mlp"] = retarget_error(fitted, truth, rig)
            row[f"{kind}_l1_mlp_correlation"] = retarget_correlation(fitted, truth)
            for n in (int(v) for v in args.labels.split(",") if v and kind == "embedding"):
                draws = [np.random.default_rng(seed).choice(len(train), n, replace=False) for seed in range(3)]
                row[f"{kind}_l1_mlp_{n}_labels"] = float(np.mean([
                    retarget_error(avatar.clip(l1_regression(train[d], train_rigs[d], query, span, seed)), truth, rig)
                    for seed, d in enumerate(draws)]))
        report[name] = {k: round(v, 4) for k, v in row.items()}
    if args.json:
        print(json.dumps({"avatars": report, "neighbours": NEIGHBOURS, "heldout_actors": len(truth)}))
        return
    for name, row in report.items():
        print(name, "  ".join(f"{k} {v:.4f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
