"""Is it the animator or its objective? The best rig the consistency loss can ask for, per image.

    .venv/bin/python research/animator_oracle.py --work runs/animator [--json]

A DIAGNOSTIC, not a model. For each of N held-out actor images it optimises a free rig (no
network) against exactly the animator's training objective: the expression-consistency loss
through the avatar's neural renderer and the frozen encoder (embeddings relative to each
domain's reference point, as `AnimatorTrainConfig.centering = "neutral"`), plus the sparsity
and plausibility regularisers. An animator is an amortised version of this optimisation, so
its retargeting error should not be expected to beat the optimum's; if the per-image optimum is
no closer to the ground-truth mapping than the neutral pose, the objective (encoder and
renderer), not the animator's architecture or training, is what limits retargeting.

Also reported, no optimisation (`--steps 0` for only these): the consistency of the
ground-truth rig and of the neutral pose, through the neural and the reference renderer (does
the objective prefer the right answer at all?), and the cosine between the avatar's embedding
displacement for the right rig and the actor's from the average actor (does the encoder see
the same expression change on the avatar at all?). Ground truth is read only to score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from freeavatar_server.inference.shipped import ANIMATOR_DIR
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.encoding import (
    ENCODER_FILE,
    embed_images,
    load_frozen_encoder,
)
from freeavatar_server.training.animator.evaluate import retarget_correlation, retarget_error
from freeavatar_server.training.animator.model import AvatarRig, bound, excess, unit_default
from freeavatar_server.training.animator.train import freeze, render_embed
from freeavatar_server.training.renderer.model import load_renderer


def consistency(renderer, encoder, rig: torch.Tensor, goal: torch.Tensor, center: torch.Tensor, size: int,
                jitter: torch.Generator | None = None) -> torch.Tensor:
    """(N,) squared distance of each rig's render from its goal, both relative to their domain.
    `jitter`: see the render through the encoder's training augmentation (small shifts, scale,
    rotation, light), a fresh draw each call."""
    return (render_embed(renderer, encoder, rig, size, jitter) - center - goal).pow(2).sum(-1)


@torch.no_grad()
def reference_displacement(avatar, encoder, rigs: np.ndarray, size: int) -> torch.Tensor:
    """(N, 16): how far each rig moves the avatar's embedding from its resting face, drawn by
    the avatar's reference (engine stand-in) renderer."""
    center = embed_images(encoder, avatar.render(np.asarray([avatar.spec.defaults], np.float32), size))[0]
    return embed_images(encoder, avatar.render(rigs, size)) - center


def mean_distance(displacement: torch.Tensor, goal: torch.Tensor) -> float:
    """Mean centred consistency of renders displaced this far from the avatar's resting face."""
    return float((displacement - goal).pow(2).sum(-1).mean())


def optimise_rigs(renderer, encoder, rig: AvatarRig, goal: torch.Tensor, center: torch.Tensor, size: int,
                  sparsity: float, steps: int, lr: float, jitter: bool) -> torch.Tensor:
    """Per-image rigs (N, C) in range units minimising consistency + sparsity * L1 to default."""
    default = unit_default(rig)
    lo = torch.tensor(rig.minimum)
    span = torch.tensor(rig.maximum) - lo
    z = default.repeat(len(goal), 1).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    gen = torch.Generator().manual_seed(0) if jitter else None
    for _ in range(steps):
        unit = bound(z, "clamp")
        loss = (consistency(renderer, encoder, lo + unit * span, goal, center, size, gen)
                + sparsity * (unit - default).abs().mean(-1) + excess(z, "clamp").mean(-1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (lo + bound(z, "clamp") * span).detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="animator_prepare.py's output (actors.npz, renderer_*.pt)")
    p.add_argument("--encoder", type=Path, default=None, help=f"default: the shipped animator's {ENCODER_FILE}")
    p.add_argument("--avatars", default=",".join(BUILTIN_AVATARS))
    p.add_argument("--images", type=int, default=100, help="held-out actor images to optimise for")
    p.add_argument("--sparsity", default="0,1.0", help="sparsity weights to try (1.0 is the animator's)")
    p.add_argument("--steps", type=int, default=150, help="optimisation steps; 0: only the ground-truth checks")
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--jitter", default="off", help="off, on or off,on: optimise through the encoder's augmentation")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    encoder = load_frozen_encoder(args.encoder or ANIMATOR_DIR / ENCODER_FILE)
    size = encoder.cfg.img_size
    d = np.load(args.work / "actors.npz")
    images, aus = d["held_images"][: args.images], d["held_aus"][: args.images]
    goal = embed_images(encoder, images) - embed_images(encoder, d["train_images"]).mean(0)
    out: dict[str, dict[str, float]] = {}
    for name in args.avatars.split(","):
        avatar = BUILTIN_AVATARS[name]
        rig = AvatarRig.from_spec(avatar.spec)
        renderer = freeze(load_renderer(args.work / f"renderer_{name}.pt"))
        truth = avatar.expected_rig(aus)
        neutral = np.tile(np.asarray(rig.default, np.float32), (len(aus), 1))
        with torch.no_grad():
            center = render_embed(renderer, encoder, torch.tensor([rig.default]), size)[0]
            truth_displacement = reference_displacement(avatar, encoder, truth, size)
            row = {
                "neutral_error": retarget_error(neutral, truth, rig),
                "ground_truth_consistency": float(consistency(renderer, encoder, torch.from_numpy(truth), goal, center, size).mean()),
                "ground_truth_ref_consistency": mean_distance(truth_displacement, goal),
                # the resting face is each renderer's own reference point: zero displacement
                "neutral_consistency": mean_distance(torch.zeros_like(goal), goal),
                "neutral_ref_consistency": mean_distance(torch.zeros_like(goal), goal),
                # does the avatar's right expression move its embedding the way the actor's
                # moves from the average actor? 1: same direction, 0: unrelated
                "ground_truth_ref_cosine": float(F.cosine_similarity(truth_displacement, goal, dim=-1).mean()),
            }
        for w in (float(s) for s in args.sparsity.split(",")) if args.steps else ():
            for jitter in args.jitter.split(","):
                t0, tag = time.time(), f"@{w:g}" + ("+jitter" if jitter == "on" else "")
                rigs = optimise_rigs(renderer, encoder, rig, goal, center, size, w, args.steps, args.lr, jitter == "on")
                with torch.no_grad():
                    row[f"optimum_consistency{tag}"] = float(consistency(renderer, encoder, rigs, goal, center, size).mean())
                row[f"optimum_ref_consistency{tag}"] = mean_distance(reference_displacement(avatar, encoder, rigs.numpy(), size), goal)
                row[f"optimum_error{tag}"] = retarget_error(rigs.numpy(), truth, rig)
                row[f"optimum_correlation{tag}"] = retarget_correlation(rigs.numpy(), truth)
                row[f"seconds{tag}"] = round(time.time() - t0, 1)
        out[name] = row
        if not args.json:
            print(name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
