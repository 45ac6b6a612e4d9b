"""Per-column Pearson correlation of predictions with the truth: the "does it move with the
actor" measure of the animator's controls and of the encoder's action-unit read-out."""

from __future__ import annotations

import numpy as np


def column_correlations(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, K) against (N, K) -> (K,) r; 0 where a prediction never moves, NaN where the truth
    never moves. A strongly negative one means a control driven backwards (or a mapping the
    avatar draws backwards: the robot's mouth once was)."""
    p, t = predicted - predicted.mean(0), truth - truth.mean(0)
    denominator = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    r = np.divide((p * t).sum(0), denominator, out=np.zeros(p.shape[1]), where=denominator > 1e-12)
    return np.where((t**2).sum(0) > 1e-12, r, np.nan)
