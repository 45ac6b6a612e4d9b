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
- How much of the action units a linear probe reads from each: a ridge regression from features
  to the 25 units, fitted on held-out identities and scored on others (mean per-unit Pearson r,
  `au_probe_correlation`), for the encoder and every baseline, MediaPipe's blendshapes and mesh
  among them; and for the encoder's embedding beside its action-unit read-out, the graph's
  second output (`au_probe_correlation_with_read_out`).
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


TRACKED_PASSES = 3  # mesh runs per crop in mediapipe_features: the tracker's steady state


def mediapipe_features(kind: str, threads: int = 1) -> Features:
    """MediaPipe's reading of a face crop as a feature vector: its 52 blendshapes, or its mesh
    (468 points, x and y in the eye frame: centred between the eyes, scaled by their distance).
    Each crop is read as the live tracker reads a face held still: the mesh first runs on the
    crop as a whole (the crops are framed on the head), then twice more on the region the last
    landmarks give. A single read on the crop's own framing reads far less (on 300 held-out
    192 px actors, blink r 0.26 against 0.74, jaw 0.32 against 0.55)."""
    from freeavatar_server.inference.face.front import eye_frame  # lazy: ORT, for baselines only
    from freeavatar_server.inference.face_landmarker import (
        FaceLandmarker,
        FaceRoi,
        roi_from_landmarks,
    )

    landmarker = FaceLandmarker(threads=threads)

    def run(images: np.ndarray) -> np.ndarray:
        out = []
        for image in images:
            side = float(image.shape[0])
            roi = FaceRoi(np.array([side / 2, side / 2]), side * 1.1, 0.0)
            for _ in range(TRACKED_PASSES):
                mesh = landmarker.run_mesh(image, roi)
                roi = roi_from_landmarks(mesh.landmarks)
            if kind == "blendshapes":
                out.append(landmarker.blendshapes(mesh.landmarks, mesh.tongue_out))
            else:
                centre, scale = eye_frame(mesh.landmarks)
                out.append(((mesh.landmarks[:468, :2] - centre) / scale).ravel())
        return np.array(out, np.float32)

    return run


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
    return scores_of(features(ev.triplets.pool.images), ev.triplets)


def scores_of(pool_features: np.ndarray, ts: D.TripletSet) -> dict[str, float]:
    """Triplet accuracy from the features of the triplets' pool."""
    from freeavatar_server.training.encoder.train import triplet_correct  # lazy: torch

    ok = triplet_correct(pool_features[ts.index], ts.odd)
    return {"unambiguous": round(float(ok[~ts.ambiguous].mean()), 4), "all": round(float(ok.mean()), 4)}


def identity_invariance(features: Features, ev: EvalSet) -> float:
    q = ev.quads
    f = features(q.reshape(-1, *q.shape[2:])).reshape(len(q), 3, -1)
    same_expr = np.linalg.norm(f[:, 0] - f[:, 1], axis=1)
    same_id = np.linalg.norm(f[:, 0] - f[:, 2], axis=1)
    return round(float((same_expr < same_id).mean()), 4)


@dataclass
class ProbeSet:
    """Faces of held-out identities with their action units, for a linear probe."""

    images: np.ndarray  # (N, S, S, 3) uint8
    action_units: np.ndarray  # (N, N_AU)
    train: int  # the first `train` faces fit the probe, the rest score it


def build_probe_set(size: int, n_train: int = 1000, n_test: int = 500, seed: int = EVAL_SEED + 21) -> ProbeSet:
    """Identities apart from the triplets' and from each other between the two halves."""
    from freeavatar_server.synth.actors import render_faces, sample_expressions  # lazy: torch

    rng = np.random.default_rng(seed)
    n = n_train + n_test
    ids = EVAL_IDENTITY_OFFSET + 700_000 + rng.choice(100_000, n, replace=False)
    expressions = sample_expressions(n, rng)
    images = np.concatenate([
        render_faces(expressions[s : s + 250], ids[s : s + 250], size=size, seed=seed + s).images for s in range(0, n, 250)
    ])  # fmt: skip
    return ProbeSet(images, expressions, n_train)


def ridge_probe_correlation(features: np.ndarray, targets: np.ndarray, train: int) -> float:
    """Mean per-unit Pearson r of `ridge_probe_correlations`."""
    return round(float(np.nanmean(ridge_probe_correlations(features, targets, train))), 4)


def ridge_probe_correlations(features: np.ndarray, targets: np.ndarray, train: int) -> np.ndarray:
    """Per-unit Pearson r (NaN for a unit that never moves) of a ridge regression from features
    to action units, fitted on the first `train` rows (its strength chosen on a fifth of them)
    and scored on the rest. Solved in its dual form (an n x n system), so that raw pixels (tens
    of thousands of features) cost no more than a 16-d embedding."""
    x = features.astype(np.float64)
    mean, std = x[:train].mean(0), x[:train].std(0) + 1e-8
    x = (x - mean) / std
    y = targets - targets[:train].mean(0)
    fit, val = slice(0, train * 4 // 5), slice(train * 4 // 5, train)

    def predict(rows: slice, onto: slice, strength: float) -> np.ndarray:
        gram = x[rows] @ x[rows].T
        alpha = np.linalg.solve(gram + strength * np.eye(len(gram)), y[rows])
        return x[onto] @ x[rows].T @ alpha

    def correlations(predicted: np.ndarray, onto: slice) -> np.ndarray:
        truth = y[onto]
        return np.array([np.corrcoef(predicted[:, k], truth[:, k])[0, 1] if truth[:, k].std() > 0 else np.nan
                         for k in range(truth.shape[1])])  # fmt: skip

    # strengths relative to the features' own scale (the trace of the Gram matrix per row)
    scale = x.shape[1]
    best = max((1e-3, 1e-2, 1e-1, 1.0, 10.0), key=lambda k: np.nanmean(correlations(predict(fit, val, k * scale), val)))
    return correlations(predict(slice(0, train), slice(train, len(x)), best * scale), slice(train, len(x)))


def au_probe(features: Features, probe: ProbeSet) -> float:
    return ridge_probe_correlation(features(probe.images), probe.action_units, probe.train)


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


@dataclass
class HeldOutSets:
    """Everything the encoder's figures are measured on, built once for every feature set."""

    triplets: EvalSet  # people's triplets and identity quads
    probe: ProbeSet
    styled: dict[str, EvalSet]  # "stylised", "mascot": the same kind of triplets on those faces


def build_held_out_sets(size: int, n_triplets: int = 2000, n_quads: int | None = None, seed: int = EVAL_SEED) -> HeldOutSets:
    """Deterministic in its arguments; the probe and the styled triplets scale with n_triplets."""
    from freeavatar_server.synth.actors import MASCOT_OFFSET, STYLISED_OFFSET  # lazy: torch

    n_quads = n_quads if n_quads is not None else min(500, max(8, n_triplets // 4))
    ev = build_eval_set(size=size, n_triplets=n_triplets, n_quads=n_quads, seed=seed)
    probe = build_probe_set(size, n_train=max(40, n_triplets // 2), n_test=max(20, n_triplets // 4), seed=seed + 21)
    styled = {
        name: EvalSet(
            D.synthetic_eval_triplets(max(8, n_triplets // 2), size=size, seed=seed + salt, identity_offset=offset + EVAL_IDENTITY_OFFSET),
            ev.quads[:0], seed,
        )
        for name, offset, salt in (("stylised", STYLISED_OFFSET, 9), ("mascot", MASCOT_OFFSET, 11))
    }  # fmt: skip
    return HeldOutSets(ev, probe, styled)


def encoder_figures(features: Features, sets: HeldOutSets) -> dict:
    """An encoder's held-out figures (the keys of `freeavatar eval encoder --json`)."""
    ts = sets.triplets.triplets
    pool = features(ts.pool.images)
    report = {
        "au_probe_correlation": au_probe(features, sets.probe),
        "triplet_accuracy": scores_of(pool, ts),
        "identity_invariance": identity_invariance(features, sets.triplets),
    }
    # expression beyond human looks
    report |= {f"{name}_triplet_accuracy": triplet_scores(features, ev) for name, ev in sets.styled.items()}
    if ts.true_odd is not None:
        # the same accuracy against noiseless labels: how much of the error is annotator noise
        from freeavatar_server.training.encoder.train import triplet_correct  # lazy: torch

        report["triplet_accuracy_vs_true_labels"] = round(float(triplet_correct(pool[ts.index], ts.true_odd).mean()), 4)
    return report


def evaluate(weights: Weights, *, n_triplets: int = 2000, n_quads: int | None = None, seed: int = EVAL_SEED, threads: int = 2) -> dict:
    """The full report: the encoder's numbers and every baseline's, on one held-out set."""
    import torch

    # lazy: torch
    from freeavatar_server.training.encoder.train import load_classifier, load_encoder

    torch.set_num_threads(threads)
    # `with_read_out`: the embedding beside the action-unit read-out the same graph serves (None
    # for an encoder without one), for the probe: what the encoder's outputs carry of the units
    with_read_out: Features | None
    if weights.encoder.suffix == ".onnx":
        sess = OnnxEncoder(weights.encoder, threads=threads)
        size = sess.size
        encoder: Features = sess.embed_batch
        with_read_out = (lambda images: np.concatenate(sess.read_batch(images), axis=1)) if sess.unit_dim else None
    else:
        enc = load_encoder(weights.encoder)
        size = enc.cfg.img_size
        encoder = torch_features(enc)
        with_read_out = torch_features(lambda x: torch.cat(enc(x, with_units=True), 1)) if enc.cfg.au_units else None
    sets = build_held_out_sets(size, n_triplets, n_quads, seed)
    extractors: dict[str, Features] = {
        "raw_pixels": raw_pixel_features,
        "geometry": geometry_features,
        "mediapipe_blendshapes": mediapipe_features("blendshapes", threads),
        "mediapipe_mesh": mediapipe_features("mesh", threads),
    }
    if weights.mae is not None and weights.mae.exists():
        extractors["mae_features"] = torch_features(load_encoder(weights.mae).backbone.pooled)
    if weights.classifier is not None and weights.classifier.exists():
        extractors["classifier_features"] = torch_features(load_classifier(weights.classifier).backbone.pooled)
    skipped = [name for name in ("mae_features", "classifier_features") if name not in extractors]
    if skipped:
        import sys

        print(f"note: baselines {', '.join(skipped)} skipped: no weights (mae.pt, classifier.pt in a run "
              f"directory). To score them: {REBUILD_BASELINES}", file=sys.stderr)
    ts = sets.triplets.triplets
    report = encoder_figures(encoder, sets)
    if with_read_out is not None:
        report["au_probe_correlation_with_read_out"] = au_probe(with_read_out, sets.probe)
    report |= {
        "au_probe_correlation_baselines": {name: au_probe(fn, sets.probe) for name, fn in extractors.items()},
        "au_probe_faces": {"train": sets.probe.train, "test": len(sets.probe.images) - sets.probe.train},
        "baselines": {name: triplet_scores(fn, sets.triplets) for name, fn in extractors.items()},
        "identity_invariance_baselines": {name: identity_invariance(fn, sets.triplets) for name, fn in extractors.items()},
        "n_triplets": int(len(ts)),
        "n_unambiguous": int((~ts.ambiguous).sum()),
        "label_noise_rate": round(float((ts.odd != ts.true_odd).mean()), 4) if ts.true_odd is not None else None,
        "triplet_source": ts.pool.meta.get("source"),
        "eval_seed": seed,
        "eval_identity_offset": EVAL_IDENTITY_OFFSET,
        "encoder": str(weights.encoder),
        "baselines_skipped": skipped,
    }
    return report
