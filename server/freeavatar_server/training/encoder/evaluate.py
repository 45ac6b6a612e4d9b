"""Evaluation of the expression encoder on a held-out synthetic set it builds itself.

- Triplet accuracy on comparison triplets of identities never seen in training (identity ids
  from EVAL_IDENTITY_OFFSET up; training uses 0..n_identities, validation 500_000 up), split
  into unambiguous and all triplets. A triplet is right when d(a,p) < d(a,n) and d(a,p) < d(p,n)
  where (a, p) is the labelled similar pair and n the face labelled most different.
- The same numbers for baselines, computed by the same code: raw pixels, MAE features before
  triplet tuning, the same backbone trained to classify emotion categories, and hand-made
  geometry measurements of brows, eyes and mouth.
- Identity invariance: for (expression e1 on identity A, e1 on identity B, e2 on A), how often
  d(Ae1, Be1) < d(Ae1, Ae2), i.e. the same expression on another person is closer than
  another expression on the same person.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freeavatar_server.inference.encoder import OnnxEncoder, resize_uint8
from freeavatar_server.inference.shipped import ENCODER_CHECKPOINT
from freeavatar_server.training.encoder import data as D

EVAL_IDENTITY_OFFSET = 1_000_000
EVAL_SEED = 20240920
Features = Callable[[np.ndarray], np.ndarray]  # uint8 (N, S, S, 3) -> (N, D) float


@dataclass
class EvalSet:
    triplets: D.TripletSet
    quads: np.ndarray  # (Q, 3, S, S, 3) uint8: A e1, B e1, A e2
    seed: int


def build_eval_set(*, size: int = 64, n_triplets: int = 2000, n_quads: int = 500, seed: int = EVAL_SEED) -> EvalSet:
    """The fixed held-out set: deterministic in (size, n_triplets, n_quads, seed)."""
    from freeavatar_server.synth.actors import render_faces, sample_expressions  # lazy: torch

    trips = D.synthetic_eval_triplets(n_triplets, size=size, seed=seed, identity_offset=EVAL_IDENTITY_OFFSET)
    rng = np.random.default_rng(seed + 5)
    e1, e2 = sample_expressions(n_quads, rng), sample_expressions(n_quads, rng)
    a = EVAL_IDENTITY_OFFSET + 900_000 + rng.choice(100_000, n_quads, replace=False)
    b = a + 100_000
    expr = np.stack([e1, e1, e2], axis=1).reshape(-1, e1.shape[1])
    ids = np.stack([a, b, a], axis=1).reshape(-1)
    faces = render_faces(expr, ids, size=size, seed=seed + 6).images
    return EvalSet(trips, resize_uint8(faces, size).reshape(n_quads, 3, size, size, 3), seed)


# ------------------------------------------------------------------------------------------
# feature extractors


def raw_pixel_features(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


# Regions of a 64 px face crop (y0, y1, x0, x1) as fractions of the crop: where the synthetic
# actors' brows, eyes and mouth sit for a frontal face (pose moves them; that is the baseline's
# weakness, as it is for any measurement without a landmark fit).
_REGIONS = {
    "brow_l": (0.26, 0.44, 0.18, 0.48), "brow_r": (0.26, 0.44, 0.52, 0.82),
    "eye_l": (0.42, 0.60, 0.20, 0.48), "eye_r": (0.42, 0.60, 0.52, 0.80),
    "mouth": (0.66, 0.92, 0.28, 0.72),
}  # fmt: skip


def geometry_features(images: np.ndarray) -> np.ndarray:
    """Hand-made shape measurements: in each brow/eye/mouth region, threshold the pixels darker
    than the region's skin (median) and measure area, centroid and spread (x, y) of that dark
    blob, plus the mouth's vertical extent. Z-scored over the set so no measurement dominates."""
    gray = images.astype(np.float32).mean(-1) / 255.0
    n, h, w = gray.shape
    feats = []
    for y0, y1, x0, x1 in _REGIONS.values():
        r = gray[:, int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)]
        med = np.median(r.reshape(n, -1), axis=1)[:, None, None]
        dark = np.clip((med - r) / (med + 1e-3) - 0.15, 0, None)  # soft mask of dark features
        mass = dark.sum((1, 2)) + 1e-4
        ys, xs = np.mgrid[0 : r.shape[1], 0 : r.shape[2]].astype(np.float32)
        ys, xs = ys / r.shape[1], xs / r.shape[2]
        cy = (dark * ys).sum((1, 2)) / mass
        cx = (dark * xs).sum((1, 2)) / mass
        sy = np.sqrt((dark * (ys - cy[:, None, None]) ** 2).sum((1, 2)) / mass)
        sx = np.sqrt((dark * (xs - cx[:, None, None]) ** 2).sum((1, 2)) / mass)
        feats += [mass / dark[0].size, cy, cx, sy, sx]
    f = np.stack(feats, axis=1)
    return (f - f.mean(0)) / (f.std(0) + 1e-6)


def torch_features(model_fn) -> Features:
    """Wrap a torch callable (float NCHW in [0,1] -> (N, D)) as a Features function."""

    def run(images: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return np.concatenate(
                [model_fn(D.to_tensor(images[s : s + 256])).numpy() for s in range(0, len(images), 256)]
            )

    return run


# ------------------------------------------------------------------------------------------
# metrics


def triplet_scores(features: Features, ev: EvalSet) -> dict[str, float]:
    from freeavatar_server.training.encoder.train import triplet_correct  # lazy: torch

    ts = ev.triplets
    f = features(ts.pool.images)
    ok = triplet_correct(f[ts.index], ts.odd)
    return {"unambiguous": round(float(ok[~ts.ambiguous].mean()), 4), "all": round(float(ok.mean()), 4)}


def identity_invariance(features: Features, ev: EvalSet) -> float:
    q = ev.quads
    f = features(q.reshape(-1, *q.shape[2:])).reshape(len(q), 3, -1)
    same_expr = np.linalg.norm(f[:, 0] - f[:, 1], axis=1)
    same_id = np.linalg.norm(f[:, 0] - f[:, 2], axis=1)
    return round(float((same_expr < same_id).mean()), 4)


@dataclass(frozen=True)
class Weights:
    """Where the encoder and the baseline backbones come from."""

    encoder: Path  # triplet-stage checkpoint (.pt) or an exported .onnx
    mae: Path | None
    classifier: Path | None


# The package ships the encoder only; the MAE and classifier baselines live in a training run
# directory. What rebuilds them, printed when they are absent:
REBUILD_BASELINES = (
    "freeavatar train encoder --out runs/encoder (or --stages mae,classifier beside a triplet.pt), "
    "then: freeavatar eval encoder --run-dir runs/encoder"
)


def default_weights(run_dir: Path | None = None) -> Weights:
    """A training run directory (triplet.pt, and the baselines mae.pt, classifier.pt when it has
    them) or the shipped encoder, without baselines."""
    if run_dir is not None:
        r = Path(run_dir)
        opt = lambda p: p if p.exists() else None  # noqa: E731
        return Weights(r / "triplet.pt", opt(r / "mae.pt"), opt(r / "classifier.pt"))
    return Weights(ENCODER_CHECKPOINT, None, None)


def evaluate(weights: Weights, *, n_triplets: int = 2000, n_quads: int | None = None, seed: int = EVAL_SEED, threads: int = 2) -> dict:
    """The full report: the encoder's numbers and every baseline's, on one held-out set."""
    import torch

    # lazy: torch
    from freeavatar_server.training.encoder.train import load_classifier, load_encoder

    torch.set_num_threads(threads)
    if weights.encoder.suffix == ".onnx":
        sess = OnnxEncoder(weights.encoder, threads=threads)
        size = sess.size
        encoder: Features = sess.embed_batch
    else:
        enc = load_encoder(weights.encoder)
        size = enc.cfg.img_size
        encoder = torch_features(enc)
    n_quads = n_quads if n_quads is not None else min(500, max(8, n_triplets // 4))
    ev = build_eval_set(size=size, n_triplets=n_triplets, n_quads=n_quads, seed=seed)
    extractors: dict[str, Features] = {"raw_pixels": raw_pixel_features, "geometry": geometry_features}
    if weights.mae is not None and weights.mae.exists():
        extractors["mae_features"] = torch_features(load_encoder(weights.mae).backbone.pooled)
    if weights.classifier is not None and weights.classifier.exists():
        extractors["classifier_features"] = torch_features(load_classifier(weights.classifier).backbone.pooled)
    skipped = [name for name in ("mae_features", "classifier_features") if name not in extractors]
    if skipped:
        import sys

        print(f"note: baselines {', '.join(skipped)} skipped: no weights (mae.pt, classifier.pt in a run "
              f"directory). To score them: {REBUILD_BASELINES}", file=sys.stderr)
    ts = ev.triplets
    report = {
        "triplet_accuracy": triplet_scores(encoder, ev),
        "baselines": {name: triplet_scores(fn, ev) for name, fn in extractors.items()},
        "identity_invariance": identity_invariance(encoder, ev),
        "identity_invariance_baselines": {name: identity_invariance(fn, ev) for name, fn in extractors.items()},
        "n_triplets": int(len(ts)),
        "n_unambiguous": int((~ts.ambiguous).sum()),
        "label_noise_rate": round(float((ts.odd != ts.true_odd).mean()), 4) if ts.true_odd is not None else None,
        "triplet_source": ts.pool.meta.get("source"),
        "eval_seed": seed,
        "eval_identity_offset": EVAL_IDENTITY_OFFSET,
        "encoder": str(weights.encoder),
        "baselines_skipped": skipped,
    }
    # the same kind of triplets on held-out stylised characters and mascots: expression beyond
    # human looks
    from freeavatar_server.synth.actors import MASCOT_OFFSET, STYLISED_OFFSET

    for name, offset, salt in (("stylised", STYLISED_OFFSET, 9), ("mascot", MASCOT_OFFSET, 11)):
        triplets = D.synthetic_eval_triplets(max(8, n_triplets // 2), size=size, seed=seed + salt, identity_offset=offset + EVAL_IDENTITY_OFFSET)
        report[f"{name}_triplet_accuracy"] = triplet_scores(encoder, EvalSet(triplets, ev.quads[:0], seed))
    if ts.true_odd is not None:
        # the same accuracy against noiseless labels: how much of the error is annotator noise
        from freeavatar_server.training.encoder.train import triplet_correct

        f = encoder(ts.pool.images)
        report["triplet_accuracy_vs_true_labels"] = round(float(triplet_correct(f[ts.index], ts.true_odd).mean()), 4)
    return report
