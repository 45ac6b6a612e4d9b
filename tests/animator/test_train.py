"""Training through the frozen renderer and encoder: gradients, keyframes, freezing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from freeavatar_server.avatars.sampling import propose_rig_vectors
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.encoding import load_frozen_encoder
from freeavatar_server.training.animator.model import AnimatorConfig, AvatarRig, SharedAnimator
from freeavatar_server.training.animator.train import (
    ActorData,
    AnimatorTrainConfig,
    AvatarTarget,
    RigPairs,
    fit_animator,
    freeze,
    pair_distance,
    render_embed,
    render_sample_pairs,
)
from tests.animator.conftest import tiny_renderer


def actors(n: int = 64, seed: int = 0) -> ActorData:
    g = torch.Generator().manual_seed(seed)
    e = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1)
    clips = torch.nn.functional.normalize(torch.randn(4, 6, 16, generator=g), dim=-1)
    return ActorData(e[8:], e[8:], e[:8], e[:8], clips)


def animator(*names: str) -> SharedAnimator:
    torch.manual_seed(0)
    model = SharedAnimator(AnimatorConfig(width=32, token_dim=16, heads=2))
    for i, name in enumerate(names):
        model.add_avatar(name, AvatarRig.from_spec(BUILTIN_AVATARS[name].spec), seed=i)
    return model


def test_gradients_reach_the_animator_through_frozen_renderer_and_encoder(tiny_encoder_path: Path) -> None:
    encoder = load_frozen_encoder(tiny_encoder_path)
    renderer = freeze(tiny_renderer("robot"))
    model = animator("robot")
    e = actors().inputs[:8]
    rendered = render_embed(renderer, encoder, model(e, "robot"), 16)
    (rendered - e).pow(2).sum(-1).mean().backward()
    frozen = [*encoder.parameters(), *renderer.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    own = model.avatar_parameters("robot")
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    assert model.stem.weight.grad.abs().sum() > 0
    assert not renderer.training and not encoder.training  # BatchNorm statistics stay fixed


def test_jitter_draws_a_fresh_view_of_each_render(tiny_encoder_path: Path) -> None:
    encoder = load_frozen_encoder(tiny_encoder_path)
    renderer = freeze(tiny_renderer("robot"))
    rigs = torch.from_numpy(propose_rig_vectors(BUILTIN_AVATARS["robot"].spec, 4, seed=1))
    with torch.no_grad():
        plain = render_embed(renderer, encoder, rigs, 16)
        seen = [render_embed(renderer, encoder, rigs, 16, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(seen[0], seen[1])  # one draw per seed: training stays reproducible
    assert not torch.allclose(seen[0], plain) and not torch.allclose(seen[0], seen[2])


@pytest.mark.parametrize("jitter", [False, True])
def test_consistency_training_reaches_expressions_a_rig_can_make(tiny_encoder_path: Path, trained_robot_renderer, jitter: bool) -> None:
    """Actors whose embeddings are those of the avatar's own renders: a rig exists for each, and
    training must find most of the way there from the resting pose (also when it sees every
    render through the encoder's augmentation, and is scored without it)."""
    encoder = load_frozen_encoder(tiny_encoder_path)
    model = animator("robot")
    target = AvatarTarget("robot", model.rigs["robot"], trained_robot_renderer)
    with torch.no_grad():
        rigs = torch.from_numpy(propose_rig_vectors(BUILTIN_AVATARS["robot"].spec, 72, seed=5))
        e = render_embed(trained_robot_renderer, encoder, rigs, 16)
    data = ActorData(e[8:], e[8:], e[:8], e[:8])
    # absolute embeddings: centred ones aim at e - mean(e), which no rig need reach
    config = AnimatorTrainConfig(steps=1, batch_size=8, evaluations=1, sparsity_weight=0.0, centering="none", jitter=jitter)
    start = fit_animator(model, [target], data, encoder, 16, config, list(model.parameters())).metrics
    longer = replace(config, steps=60, batch_size=16, evaluations=4)
    trained = fit_animator(model, [target], data, encoder, 16, longer, list(model.parameters())).metrics
    assert trained["val_consistency"] < 0.6 * start["val_consistency"]
    assert trained["steps"] == 60


def keyframe_error(model: SharedAnimator, kf: RigPairs) -> float:
    with torch.no_grad():
        rig = model.rigs["cartoon"]
        lo, hi = torch.tensor(rig.minimum), torch.tensor(rig.maximum)
        return float(((model(kf.inputs, "cartoon") - kf.rigs) / (hi - lo)).abs().mean())


def test_keyframes_pull_the_rig_towards_the_artists_pose(tiny_encoder_path: Path) -> None:
    encoder = load_frozen_encoder(tiny_encoder_path)
    data = actors()
    cartoon = BUILTIN_AVATARS["cartoon"]
    poses = torch.from_numpy(cartoon.sample_rigs(5, __import__("numpy").random.default_rng(0)))
    kf = RigPairs(data.inputs[:5], poses)
    config = AnimatorTrainConfig(steps=60, batch_size=8, evaluations=1, keyframe_weight=5.0)
    errors = {}
    for use in (False, True):
        model = animator("cartoon")
        target = AvatarTarget("cartoon", model.rigs["cartoon"], tiny_renderer("cartoon"), kf if use else None)
        fit_animator(model, [target], data, encoder, 16, config, list(model.parameters()))
        errors[use] = keyframe_error(model, kf)
    assert errors[True] < 0.75 * errors[False]


def test_tuning_only_a_new_avatar_leaves_the_others_unchanged(tiny_encoder_path: Path) -> None:
    encoder = load_frozen_encoder(tiny_encoder_path)
    data = actors()
    model = animator("robot", "cartoon")
    with torch.no_grad():
        before = {n: model(data.val_inputs, n).clone() for n in ("robot", "cartoon")}
    model.add_avatar("new", AvatarRig.from_spec(BUILTIN_AVATARS["robot"].spec), seed=5)
    target = AvatarTarget("new", model.rigs["new"], tiny_renderer("robot", seed=1))
    fit_animator(model, [target], data, encoder, 16, AnimatorTrainConfig(steps=10, batch_size=8, evaluations=2),
                 model.avatar_parameters("new"))
    with torch.no_grad():
        for name, old in before.items():
            assert torch.equal(model(data.val_inputs, name), old)
    assert all(p.requires_grad for p in model.parameters())  # flags restored after the run


def test_render_samples_are_read_in_the_actors_frame(tiny_encoder_path: Path, trained_robot_renderer) -> None:
    """A sample's embedding is moved by (mean actor - the avatar's resting render), as the
    consistency loss compares them: the resting face's own render reads as the average actor."""
    encoder = load_frozen_encoder(tiny_encoder_path)
    data = actors()
    robot = BUILTIN_AVATARS["robot"]
    target = AvatarTarget("robot", AvatarRig.from_spec(robot.spec), freeze(trained_robot_renderer))
    rest = torch.tensor([target.rig.default])
    with torch.no_grad():
        resting = render_embed(trained_robot_renderer, encoder, rest, 16)
    pairs = render_sample_pairs(target, resting, rest, data.targets, encoder, 16, "neutral")
    assert torch.allclose(pairs.inputs[0], data.targets.mean(0), atol=1e-6)
    assert torch.equal(pairs.rigs, rest)
    raw = render_sample_pairs(target, resting, rest, data.targets, encoder, 16, "none")
    assert torch.equal(raw.inputs, resting)


def test_render_samples_teach_the_animator_the_rig_behind_each_image(tiny_encoder_path: Path) -> None:
    """With their term, the animator gives each sample (nearly) the rig the engine drew it
    from. The tiny random encoder reads every robot render alike, so a fixed random projection
    of the rig stands in for a trained encoder's reading of its image."""
    encoder = load_frozen_encoder(tiny_encoder_path)
    robot = BUILTIN_AVATARS["robot"]
    rigs = torch.from_numpy(propose_rig_vectors(robot.spec, 96, seed=3))
    lo, hi = torch.tensor([c.min for c in robot.spec.controls]), torch.tensor([c.max for c in robot.spec.controls])
    mixing = torch.randn(len(lo), 16, generator=torch.Generator().manual_seed(9))
    readings = torch.nn.functional.normalize(((rigs - lo) / (hi - lo) - 0.5) @ mixing, dim=-1)
    data = actors()
    # no pull to the resting pose: an equal L1 pull there would cancel the samples' own
    config = AnimatorTrainConfig(steps=80, batch_size=16, evaluations=1, sparsity_weight=0.0)
    errors = {}
    for weight in (0.0, 1.0):
        model = animator("robot")
        target = AvatarTarget("robot", model.rigs["robot"], tiny_renderer("robot"), samples=RigPairs(readings, rigs))
        fit_animator(model, [target], data, encoder, 16, replace(config, samples_weight=weight), list(model.parameters()))
        with torch.no_grad():
            errors[weight] = float(pair_distance(model, target, target.samples))
    assert errors[1.0] < 0.75 * errors[0.0], errors
