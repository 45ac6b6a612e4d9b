"""The action-unit probe of `freeavatar eval encoder`: a ridge regression that reads what a
feature carries, scored on faces it was not fitted on."""

from __future__ import annotations

import numpy as np

from freeavatar_server.training.encoder.evaluate import ridge_probe_correlation


def test_the_probe_reads_units_a_feature_carries_and_not_noise():
    rng = np.random.default_rng(0)
    units = rng.random((300, 5))
    mixed = units @ rng.normal(size=(5, 12)) + 0.05 * rng.normal(size=(300, 12))  # a linear view of them
    assert ridge_probe_correlation(mixed, units, train=200) > 0.95
    noise = rng.normal(size=(300, 12))
    assert abs(ridge_probe_correlation(noise, units, train=200)) < 0.2
