"""Keyframes for a linear readout: which frames to pose, and the fit in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.keyframes import (
    fit_keyframes,
    render_prior,
    suggest_keyframes,
)
from freeavatar_server.training.animator.model import (
    AnimatorConfig,
    AvatarRig,
    SharedAnimator,
    unit_default,
)


def robot_animator(rows: torch.Tensor) -> SharedAnimator:
    model = SharedAnimator(AnimatorConfig(embed_dim=6, readout="linear"))
    model.standardise_inputs(rows)
    model.add_avatar("robot", AvatarRig.from_spec(BUILTIN_AVATARS["robot"].spec))
    return model


def linear_world(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input rows and the robot's rigs, a linear map of them inside each control's range."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, 6, generator=g) * 0.5 + 0.2
    mix = torch.randn(6, 8, generator=torch.Generator().manual_seed(99)) * 0.05
    spec = BUILTIN_AVATARS["robot"].spec
    lo = torch.tensor([c.min for c in spec.controls])
    span = torch.tensor([c.max - c.min for c in spec.controls])
    return rows, lo + (0.5 + rows @ mix) * span


def test_keyframes_of_a_linear_world_are_fitted_exactly() -> None:
    rows, rigs = linear_world(20, seed=0)
    model = robot_animator(rows)
    fit_keyframes(model, "robot", rows, rigs, strength=1e-6)
    new_rows, new_rigs = linear_world(50, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(model(new_rows, "robot"), new_rigs, atol=1e-4, rtol=0)
        assert model.get_buffer("dead_zone_a_robot").eq(0).all()  # no unlabeled rows: no dead zone
    fit_keyframes(model, "robot", rows, rigs, strength=100.0)  # a strong penalty: towards the keyframes' mean
    with torch.no_grad():
        spread = model(new_rows, "robot").std(0)
    assert (spread < new_rigs.std(0) * 0.5).all()


def test_each_control_rests_on_new_actors_as_often_as_in_the_keyframes() -> None:
    """Dead zones set on one set of unlabeled actors hold each control at rest on new actors as
    often as the artist left it at rest; the robot's controls rest mid-range (offsets either
    side of the default) or at an end."""
    rows, rigs = linear_world(40, seed=2)
    spec = BUILTIN_AVATARS["robot"].spec
    rest = torch.tensor(spec.defaults)
    rigs = torch.where((torch.arange(40) < 30)[:, None], rest, rigs)  # the artist left 30 of 40 at rest
    model = robot_animator(rows)
    fit_keyframes(model, "robot", rows, rigs, strength=1.0, unlabeled=linear_world(2000, seed=3)[0])
    lo = torch.tensor([c.min for c in spec.controls])
    span = torch.tensor([c.max - c.min for c in spec.controls])
    default = (rest - lo) / span
    keyframes_resting = (((rigs - lo) / span - default).abs() < 0.05).float().mean(0)
    new_actors, _ = linear_world(2000, seed=4)
    with torch.no_grad():
        raw = model.standardised(new_actors) @ model.weights["a_robot"].T + model.biases["a_robot"]
        resting = (model.unbounded(new_actors, "robot") == default).float().mean(0)  # inside the dead zone
    assert ((raw < 0).float().mean(0) > 0.1).any()  # some controls' offsets fall below their default
    assert (keyframes_resting >= 0.75).all()
    torch.testing.assert_close(resting, keyframes_resting, atol=0.04, rtol=0)


def test_the_avatars_own_renders_give_a_few_keyframes_the_map() -> None:
    """Three keyframes cannot pin six inputs' weights; the avatar's renders can, though the encoder
    reads the avatar's face with an offset of its own (it is not an actor's face): the prior
    gives the weights, the keyframes where an actor's face rests."""
    renders, render_rigs = linear_world(500, seed=5)
    rows, rigs = linear_world(3, seed=6)
    model = robot_animator(linear_world(500, seed=7)[0])
    prior = render_prior(model, "robot", renders + 0.3, render_rigs, strength_per_render=1e-6)
    new_rows, new_rigs = linear_world(50, seed=1)
    fit_keyframes(model, "robot", rows, rigs, strength=1e4, prior=prior)
    with torch.no_grad():
        torch.testing.assert_close(model(new_rows, "robot"), new_rigs, atol=1e-3, rtol=0)
    fit_keyframes(model, "robot", rows, rigs, strength=1e4)  # without it: the keyframes' mean pose
    with torch.no_grad():
        assert (model(new_rows, "robot") - new_rigs).abs().max() > 0.05


def test_the_pull_towards_a_prior_is_ridge_regression_on_the_keyframes_and_the_prior_stacked() -> None:
    """Keyframes and prior disagreeing: the fit is least squares over the keyframes plus, for
    each weight, sqrt(strength) x (weight - prior weight) as one more residual; the bias free."""
    rows, rigs = linear_world(12, seed=8)
    model = robot_animator(linear_world(200, seed=9)[0])
    prior = torch.randn(6, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.1
    fit_keyframes(model, "robot", rows, rigs, strength=5.0, prior=prior)
    rig = model.rigs["robot"]
    target = (rigs.double() - torch.tensor(rig.minimum)) / torch.tensor(rig.span) - unit_default(rig).double()
    x = torch.cat([model.standardised(rows).double(), torch.ones(12, 1, dtype=torch.float64)], 1)
    stacked_x = torch.cat([x, torch.cat([5.0**0.5 * torch.eye(6, dtype=torch.float64), torch.zeros(6, 1, dtype=torch.float64)], 1)])
    stacked_y = torch.cat([target, 5.0**0.5 * prior])
    solution = torch.linalg.lstsq(stacked_x, stacked_y).solution
    torch.testing.assert_close(model.weights["a_robot"].double(), solution[:-1].T, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.biases["a_robot"].double(), solution[-1], atol=1e-5, rtol=0)


def test_a_fit_names_what_is_wrong() -> None:
    rows, rigs = linear_world(5, seed=0)
    with pytest.raises(ValueError, match="one rig per keyframe row"):
        fit_keyframes(robot_animator(rows), "robot", rows, rigs[:3], strength=1.0)
    with pytest.raises(ValueError, match="penalty must be above 0"):
        fit_keyframes(robot_animator(rows), "robot", rows, rigs, strength=0.0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        robot_animator(rows[:1])
    with pytest.raises(ValueError, match=r"the prior's weights must be \(6, 8\), got \(8, 6\)"):
        fit_keyframes(robot_animator(rows), "robot", rows, rigs, strength=1.0, prior=torch.zeros(8, 6))
    with pytest.raises(ValueError, match="one rig per render row"):
        render_prior(robot_animator(rows), "robot", rows, rigs[:3])
    with pytest.raises(ValueError, match="at least 2"):
        render_prior(robot_animator(rows), "robot", rows[:1], rigs[:1])
    with pytest.raises(ValueError, match="the animator's 6 inputs, got 5"):
        render_prior(robot_animator(rows), "robot", rows[:, :5], rigs)
    with pytest.raises(ValueError, match="penalty must be above 0"):
        render_prior(robot_animator(rows), "robot", rows, rigs, strength_per_render=0.0)
    attention = SharedAnimator(AnimatorConfig(embed_dim=6))
    attention.add_avatar("robot", AvatarRig.from_spec(BUILTIN_AVATARS["robot"].spec))
    with pytest.raises(ValueError, match="only a linear readout"):
        fit_keyframes(attention, "robot", rows, rigs, strength=1.0)


def test_suggested_keyframes_spread_over_the_expressions_the_actor_shows() -> None:
    """An actor at rest in most frames: a random draw of 10 would be mostly rest; the suggestion
    picks the rare, varied frames that teach the readout, each once."""
    rng = np.random.default_rng(0)
    rest = rng.normal(0, 0.05, (450, 6))
    varied = rng.normal(0, 1.0, (50, 6))
    rows = np.concatenate([rest, varied])
    picked = suggest_keyframes(rows, 10)
    assert len(set(picked.tolist())) == 10
    assert (picked >= 450).sum() >= 8
    assert np.array_equal(picked, suggest_keyframes(rows, 10))  # deterministic: no seed
    with pytest.raises(ValueError, match="cannot suggest 501 keyframes from 500 frames"):
        suggest_keyframes(rows, 501)
