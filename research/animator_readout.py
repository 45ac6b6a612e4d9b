"""Is the shared animator's readout what holds it back? One avatar alone, three readouts.

    .venv/bin/python research/animator_readout.py --work runs/animator --encoder ENCODER.pt --avatar human_arkit [--steps 250] [--json]

A DIAGNOSTIC (ablation), not a shipped model. It trains on one avatar alone, the same way and
for the same steps as `animator_train.py --part per_avatar`, so avatars cannot interfere:
- `shared`: the shipped SharedAnimator: each control reads the expression tokens through
  attention with its query;
- `shared_dot`: the same, plus a low-rank linear path. Each control adds the dot product of its
  query with a projection of the trunk features; the per-avatar part is still only the queries;
- `per_avatar`: the plain per-avatar MLP decoder (the baseline).
It reports the neural-renderer consistency the training optimises, and the held-out error and
correlation against the ground-truth mapping, read only to score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import animator_train as bench
import torch
from torch import nn

from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.encoding import load_frozen_encoder
from freeavatar_server.training.animator.evaluate import build_heldout
from freeavatar_server.training.animator.model import (
    AnimatorConfig,
    AvatarRig,
    PerAvatarDecoder,
    SharedAnimator,
    count_parameters,
)
from freeavatar_server.training.animator.train import AnimatorTrainConfig, fit_animator


class DotReadoutAnimator(SharedAnimator):
    """SharedAnimator plus <control query, projection of the trunk> on each control's output."""

    def __init__(self, config: AnimatorConfig) -> None:
        super().__init__(config)
        self.trunk_proj = nn.Linear(config.width, config.token_dim)

    def control_readout(self, x: torch.Tensor, avatar_id: str) -> torch.Tensor:
        query = self.control_queries(avatar_id)
        return super().control_readout(x, avatar_id) + self.trunk_proj(x) @ query.T / query.shape[-1] ** 0.5


def make(kind: str, rig: AvatarRig, name: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "per_avatar":
        return PerAvatarDecoder(AnimatorConfig(), rig)
    model = (DotReadoutAnimator if kind == "shared_dot" else SharedAnimator)(AnimatorConfig())
    model.add_avatar(name, rig, seed=0)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="animator_prepare.py's output")
    p.add_argument("--encoder", type=Path, required=True)
    p.add_argument("--avatar", default="human_arkit", choices=sorted(BUILTIN_AVATARS))
    p.add_argument("--kinds", default="shared,shared_dot,per_avatar")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    encoder = load_frozen_encoder(args.encoder)
    heldout = build_heldout(encoder)
    actors = bench.actor_data(args.work, encoder)
    rig = AvatarRig.from_spec(BUILTIN_AVATARS[args.avatar].spec)
    config = AnimatorTrainConfig(batch_size=args.batch, time_budget_s=3600, steps=args.steps)
    report = {}
    for kind in args.kinds.split(","):
        model = make(kind, rig, args.avatar)
        fit = fit_animator(model, [bench.target(args.work, args.avatar)], actors, encoder, encoder.cfg.img_size,
                           config, list(model.parameters()))  # fmt: skip
        scores = bench.heldout_scores(lambda n, m=model: m(heldout.embeddings, n).numpy(), (args.avatar,), heldout, encoder)
        report[kind] = {"val_consistency": fit.metrics["val_consistency"], **scores[args.avatar],
                        "parameters": count_parameters(model)}  # fmt: skip
        if not args.json:
            print(kind, report[kind], flush=True)
    if args.json:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
