"""Mascots: non-human cartoon faces whose features the action units move as they move a face."""

from __future__ import annotations

import numpy as np
import pytest

from freeavatar_server.synth.actors import (
    AU_INDEX,
    MASCOT_OFFSET,
    N_AU,
    STYLISED_OFFSET,
    render_faces,
)


def faces(expr: np.ndarray, ids: np.ndarray, **kw) -> np.ndarray:
    return render_faces(expr, ids, size=64, seed=1, nuisance=False, **kw).images.astype(np.int16)


def test_mascots_live_in_their_own_id_range_and_are_pure_functions_of_it() -> None:
    assert MASCOT_OFFSET > STYLISED_OFFSET > 10**18
    expr = np.zeros((3, N_AU), np.float32)
    ids = np.array([4, STYLISED_OFFSET + 4, MASCOT_OFFSET + 4])
    seeds = np.array([11, 12, 13])
    mixed = faces(expr, ids, sample_seeds=seeds)
    alone = faces(expr[2:], ids[2:], sample_seeds=seeds[2:])
    assert np.array_equal(mixed[2], alone[0])  # a mascot renders the same in any batch
    assert np.abs(mixed[2] - mixed[1]).mean() > 10 and np.abs(mixed[2] - mixed[0]).mean() > 10
    people = faces(expr[:1], ids[:1], sample_seeds=seeds[:1])
    assert np.array_equal(mixed[0], people[0])  # people are drawn exactly as before
    others = faces(np.zeros((8, N_AU), np.float32), MASCOT_OFFSET + np.arange(8))
    assert min(np.abs(others[i] - others[j]).mean() for i in range(8) for j in range(i)) > 3  # many styles


@pytest.mark.parametrize("au", ["brow_inner_raise", "brow_lower", "upper_lid_raise", "blink_L", "lip_corner_pull_L",
                                "lip_corner_depress_R", "lip_pucker", "lip_stretch", "jaw_drop", "jaw_sideways_L", "cheek_puff"])
def test_each_action_unit_moves_a_mascot(au: str) -> None:
    ids = MASCOT_OFFSET + np.arange(6)
    rest = np.zeros((6, N_AU), np.float32)
    moved = rest.copy()
    moved[:, AU_INDEX[au]] = 1.0
    # mean change per pixel and channel; 0.15 of a grey level is a feature a few pixels across moved
    change = np.abs(faces(moved, ids) - faces(rest, ids)).mean(axis=(1, 2, 3))
    assert np.median(change) > 0.15, f"{au} barely shows on mascots: {change}"


def test_a_one_sided_action_unit_moves_the_actors_side_of_the_mascot() -> None:
    ids = MASCOT_OFFSET + np.arange(6)
    rest = np.zeros((6, N_AU), np.float32)
    left = rest.copy()
    left[:, AU_INDEX["lip_corner_pull_L"]] = 1.0  # the actor's left is the image's right
    diff = np.abs(faces(left, ids, poses=np.zeros((6, 3))) - faces(rest, ids, poses=np.zeros((6, 3)))).sum(axis=(1, 3))
    assert (diff[:, 32:].sum(1) > 1.5 * diff[:, :32].sum(1)).mean() >= 0.8
