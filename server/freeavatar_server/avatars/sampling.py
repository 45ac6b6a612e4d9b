"""Rig vectors for a studio to render: what the neural renderer learns the rig from.

A renderer only learns the parts of rig space it is shown, so the proposal mixes three kinds of
vector: single controls swept across their range (every control's own effect), sparse random
combinations (the way faces actually move: a few controls at once, mirrored pairs together),
and dense uniform vectors (interactions anywhere in the range).
"""

from __future__ import annotations

import numpy as np

from freeavatar.rig import RigSpec

SWEEP_SHARE = 0.15
SPARSE_SHARE = 0.6


def propose_rig_vectors(spec: RigSpec, count: int, seed: int = 0) -> np.ndarray:
    """(count, controls) float32 rig vectors within each control's range."""
    rng = np.random.default_rng(seed)
    lo = np.array([c.min for c in spec.controls], dtype=np.float64)
    hi = np.array([c.max for c in spec.controls], dtype=np.float64)
    default = np.array(spec.defaults, dtype=np.float64)
    n_controls = len(spec.controls)

    n_sweep = int(count * SWEEP_SHARE)
    n_sparse = int(count * SPARSE_SHARE)
    n_dense = count - n_sweep - n_sparse

    sweep = np.tile(default, (n_sweep, 1))
    which = np.arange(n_sweep) % n_controls
    sweep[np.arange(n_sweep), which] = rng.uniform(lo[which], hi[which])

    # Each sparse vector moves ~3 controls (at least one); mirrored partners move together
    # most of the time, as real expressions are mostly symmetric.
    active = rng.random((n_sparse, n_controls)) < min(1.0, 3.0 / n_controls)
    active[np.arange(n_sparse), rng.integers(0, n_controls, n_sparse)] = True
    sparse = np.where(active, rng.uniform(lo, hi, (n_sparse, n_controls)), default)
    partner = _mirror_index(spec)
    symmetric = rng.random(n_sparse) < 0.7
    for i, j in enumerate(partner):
        if j >= 0:
            copy = symmetric & active[:, i]
            sparse[copy, j] = sparse[copy, i]

    dense = rng.uniform(lo, hi, (n_dense, n_controls))
    vectors = np.concatenate([sweep, sparse, dense])[rng.permutation(count)]
    return np.clip(vectors, lo, hi).astype(np.float32)  # a partner's range may be narrower


def _mirror_index(spec: RigSpec) -> list[int]:
    index = {c.name: i for i, c in enumerate(spec.controls)}
    return [index.get(c.mirror, -1) for c in spec.controls]
