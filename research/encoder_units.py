"""Where the encoder's action-unit read-out goes wrong, and what each unit's error costs.

    .venv/bin/python research/encoder_units.py [--encoder PATH] [--triplets 1500] [--faces 6000] [--json]

A DIAGNOSTIC for "what would it take to reach the triplet goal". Everything is on validation
identities (from `VAL_IDENTITY_OFFSET`, never trained on and never in `freeavatar eval
encoder`'s held-out set), so its findings may steer training without touching the eval set.

- triplets: comparison triplets as the eval draws them (annotator noise, 20% ambiguous), scored
  with the embedding, with the read-out's 25 units (de-standardised to the labels' 0..1 scale),
  with the true units, and with the read-out where one unit at a time is replaced by its truth:
  that unit's error's cost in unambiguous accuracy;
- faces: fresh faces from the training distribution of expressions, rendered once with the full
  nuisance and once without (frontal white light, plain background, no blur, noise or JPEG; the
  same people, poses and expressions): each unit's read-out r in both. If the clean faces are
  read about as badly, the error is in reading the expression, not in ignoring the nuisance;
- probes: linear (ridge) regressions to the units from the backbone's tokens on those faces
  with the full nuisance, mean-pooled (what the read-out sees) and pooled to 5x5 (3,200
  features), fitted on 80% of the faces (the strength chosen on the last fifth of those) and
  scored on the last 20%, as `freeavatar eval encoder`'s probe is:
  if the grid reads no better, there is no sign that the pooling loses what the read-out misses.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from freeavatar_server.inference.shipped import MODELS_DIR
from freeavatar_server.synth.actors import ACTION_UNITS, render_faces
from freeavatar_server.training.correlation import column_correlations
from freeavatar_server.training.encoder import data as D
from freeavatar_server.training.encoder.evaluate import ridge_probe_correlations, scores_of
from freeavatar_server.training.encoder.model import ExpressionEncoder
from freeavatar_server.training.encoder.train import (
    VAL_IDENTITY_OFFSET,
    UnitScale,
    embed_images,
    load_checkpoint,
    load_encoder,
)

SEED = 4242


def read_units(encoder: ExpressionEncoder, images: np.ndarray, scale: UnitScale) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, units on the labels' 0..1 scale)."""
    with torch.no_grad():
        emb = embed_images(encoder, images)
        read = embed_images(lambda x: encoder(x, with_units=True)[1], images)
    return emb, read * scale.std.numpy() + scale.mean.numpy()


def triplet_costs(encoder: ExpressionEncoder, scale: UnitScale, n: int, size: int) -> dict:
    ts = D.synthetic_eval_triplets(n, size=size, seed=SEED, identity_offset=VAL_IDENTITY_OFFSET + 50_000)
    emb, units = read_units(encoder, ts.pool.images, scale)
    true = ts.pool.expressions
    base = scores_of(units, ts)["unambiguous"]
    cost = {}
    for k, name in enumerate(ACTION_UNITS):
        fixed = units.copy()
        fixed[:, k] = true[:, k]
        cost[name] = round(scores_of(fixed, ts)["unambiguous"] - base, 4)
    return {"embedding": scores_of(emb, ts)["unambiguous"], "read_out": base, "true_units": scores_of(true, ts)["unambiguous"],
            "gain_if_unit_read_exactly": dict(sorted(cost.items(), key=lambda kv: -kv[1]))}


def face_reading(encoder: ExpressionEncoder, scale: UnitScale, n: int, size: int) -> tuple[dict, dict]:
    """Per-unit r on fresh faces without and with the nuisance, and those with it (for the probes)."""
    rng = np.random.default_rng(SEED + 1)
    expr, _ = D.stream_expressions(n, rng)
    ids = VAL_IDENTITY_OFFSET + 60_000 + np.arange(n)
    seeds = rng.integers(0, 2**62, n)
    out, with_nuisance = {}, {}
    for nuisance in (False, True):
        images = render_faces(expr, ids, size=size, sample_seeds=seeds, nuisance=nuisance).images
        r = column_correlations(read_units(encoder, images, scale)[1], expr)
        out["nuisance" if nuisance else "clean"] = {"mean_r": round(float(np.nanmean(r)), 3),
                                                   "per_unit_r": {a: round(float(v), 3) for a, v in zip(ACTION_UNITS, r, strict=True)}}
        if nuisance:
            with_nuisance = {"images": images, "expressions": expr}
    return out, with_nuisance


def token_probes(encoder: ExpressionEncoder, faces: dict) -> dict:
    images, expr = faces["images"], faces["expressions"]
    pooled, grid = [], []
    with torch.no_grad():
        for s in range(0, len(images), 256):
            tokens = encoder.backbone(D.to_tensor(images[s : s + 256]))  # (B, N, dim)
            b, n, c = tokens.shape
            side = int(round(n**0.5))
            pooled.append(tokens.mean(1).numpy())
            grid.append(F.adaptive_avg_pool2d(tokens.transpose(1, 2).reshape(b, c, side, side), 5).reshape(b, -1).numpy())
    out = {}
    for name, feats in (("pooled", pooled), ("grid_5x5", grid)):
        r = ridge_probe_correlations(np.concatenate(feats), expr.astype(np.float64), train=int(0.8 * len(images)))
        out[name] = {"mean_r": round(float(np.nanmean(r)), 3), "per_unit_r": {a: round(float(v), 3) for a, v in zip(ACTION_UNITS, r, strict=True)}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default=str(MODELS_DIR / "expression_encoder.pt"))
    parser.add_argument("--triplets", type=int, default=1500)
    parser.add_argument("--faces", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = load_encoder(args.encoder)
    if encoder.au_head is None:
        parser.error(f"{args.encoder} has no action-unit read-out")
    # the read-out is standardised by the statistics its own run drew (from the run's seed)
    scale = UnitScale.of_training_expressions(load_checkpoint(args.encoder)["config"]["seed"])
    size = encoder.cfg.img_size
    reading, faces = face_reading(encoder, scale, args.faces, size)
    result = {"encoder": args.encoder, "triplets": triplet_costs(encoder, scale, args.triplets, size),
              "faces": reading, "probes": token_probes(encoder, faces)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    t = result["triplets"]
    print(f"unambiguous: embedding {t['embedding']:.3f}, read-out {t['read_out']:.3f}, true units {t['true_units']:.3f}")
    print(f"read-out mean r: clean {reading['clean']['mean_r']:.3f}, nuisance {reading['nuisance']['mean_r']:.3f}; "
          f"probes: pooled {result['probes']['pooled']['mean_r']:.3f}, 5x5 grid {result['probes']['grid_5x5']['mean_r']:.3f}")
    print(f"{'unit':22s} {'gain':>7s} {'clean r':>8s} {'nuis. r':>8s} {'grid r':>7s}")
    for name, gain in t["gain_if_unit_read_exactly"].items():
        print(f"{name:22s} {gain:+7.4f} {reading['clean']['per_unit_r'][name]:8.3f} {reading['nuisance']['per_unit_r'][name]:8.3f} "
              f"{result['probes']['grid_5x5']['per_unit_r'][name]:7.3f}")


if __name__ == "__main__":
    main()
