"""Keyframe uploads and animator jobs through the SDK, on a real server with real workers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from freeavatar import AsyncClient, InvalidArgument, JobState, Keyframe, ModelKind, NotFound
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.inference.animator import AnimatorRuntime
from freeavatar_server.synth.actors import render_faces, sample_expressions
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.encoding import ENCODER_FILE
from freeavatar_server.training.animator.job import check_readable
from freeavatar_server.training.animator.model import (
    AnimatorConfig,
    AvatarRig,
    SharedAnimator,
    animator_inputs,
    load_animator,
    save_animator,
)
from freeavatar_server.training.encoder.model import ExpressionEncoder
from tests.animator.conftest import TINY_ENCODER
from tests.test_jobs import TINY, png, robot_samples, robot_with_samples

ROBOT = BUILTIN_AVATARS["robot"]
TINY_ANIMATOR = {"steps": 6, "batch_size": 4, "time_budget_s": 60}


def keyframes(n: int, seed: int = 0) -> list[Keyframe]:
    rng = np.random.default_rng(seed)
    faces = render_faces(sample_expressions(n, rng), np.arange(n), size=32, seed=seed).images
    rigs = ROBOT.sample_rigs(n, rng)
    return [Keyframe(tuple(float(v) for v in r), png(f)) for r, f in zip(rigs, faces, strict=True)]


@pytest.fixture
def tiny_parts(monkeypatch: pytest.MonkeyPatch, tiny_encoder_path: Path) -> None:
    """Job workers (child processes) inherit these: a tiny encoder, no shipped base network."""
    monkeypatch.setenv("FREEAVATAR_ANIMATOR_ENCODER", str(tiny_encoder_path))
    monkeypatch.setenv("FREEAVATAR_ANIMATOR_BASE", "none")


async def test_upload_keyframes_keeps_good_ones_and_names_bad_ones(client: AsyncClient) -> None:
    avatar = await client.register_avatar(ROBOT.spec)
    good = keyframes(4)
    n = ROBOT.n_controls
    bad = [
        Keyframe(good[0].rig[:-2], good[0].actor_image),
        Keyframe(good[0].rig, b"\x89PNG broken"),
        Keyframe((5.0,) * n, good[0].actor_image),
    ]
    summary = await client.upload_keyframes(avatar.id, [good[0], *bad, *good[1:]])
    assert summary.accepted == 4 and summary.total == 4
    reasons = dict(summary.rejected)
    assert sorted(reasons) == [1, 2, 3]
    assert f"rig has {n - 2} values; avatar 'robot' has {n} controls" in reasons[1]
    assert "does not decode" in reasons[2]
    assert "is outside" in reasons[3]
    again = await client.upload_keyframes(avatar.id, [(good[0].rig, good[0].actor_image)])  # tuples too
    assert again.total == 5
    assert (await client.get_avatar(avatar.id)).keyframe_count == 5
    with pytest.raises(NotFound):
        await client.upload_keyframes("ghost", good)
    with pytest.raises(InvalidArgument, match="no keyframes"):
        await client.upload_keyframes(avatar.id, [])


async def test_bad_finetune_requests(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument, match="avatar_ids is empty"):
        await client.finetune_animator([])
    with pytest.raises(NotFound):
        await client.finetune_animator(["ghost"])
    avatar = await client.register_avatar(ROBOT.spec)
    with pytest.raises(InvalidArgument, match="more than once"):
        await client.finetune_animator([avatar.id, avatar.id])
    with pytest.raises(InvalidArgument, match="image_size"):
        await client.finetune_animator(avatar.id, image_size=64)
    with pytest.raises(InvalidArgument, match="batch_size"):
        await client.finetune_animator(avatar.id, batch_size=0)


async def test_finetune_without_a_renderer_fails_with_the_reason(client: AsyncClient, tiny_parts: None) -> None:
    avatar = await client.register_avatar(ROBOT.spec)
    final = await client.wait_job((await client.finetune_animator([avatar.id], **TINY_ANIMATOR)).id)
    assert final.state == JobState.FAILED
    assert "has no active renderer" in final.error


@pytest.mark.slow
async def test_finetune_animator_end_to_end(client: AsyncClient, server: FreeAvatarServer, tiny_parts: None) -> None:
    avatar = await robot_with_samples(client)
    renderer_job = await client.wait_job((await client.train_renderer(avatar.id, **TINY)).id)
    assert renderer_job.state == JobState.SUCCEEDED, renderer_job.error
    await client.upload_keyframes(avatar.id, keyframes(3))

    job = await client.finetune_animator([avatar.id], keyframe_limit=2, **TINY_ANIMATOR)
    events = [event async for event in client.watch_job(job.id)]
    final = events[-1].job
    assert final.state == JobState.SUCCEEDED, final.error
    assert [e.job.progress for e in events] == sorted(e.job.progress for e in events)
    tuned = await client.get_avatar(avatar.id)
    assert tuned.animator is not None and tuned.animator.version == 1
    assert tuned.animator.metrics["keyframes"] == 2
    assert "val_consistency" in tuned.animator.metrics
    versions = await client.list_model_versions(avatar.id, ModelKind.ANIMATOR)
    assert [(v.version, v.active) for v in versions] == [(1, True)]

    model_dir = server.config.data_dir / "models" / avatar.id / "animator" / job.id
    runtime = AnimatorRuntime.load(model_dir)
    assert runtime.avatar_ids == [avatar.id]
    rig = runtime.predict(np.eye(16, dtype=np.float32)[:3], avatar.id)
    lo = np.array([c.min for c in ROBOT.spec.controls])
    hi = np.array([c.max for c in ROBOT.spec.controls])
    assert rig.shape == (3, ROBOT.n_controls) and (rig >= lo - 1e-6).all() and (rig <= hi + 1e-6).all()


@pytest.mark.slow
async def test_a_job_on_a_base_adds_avatars_without_changing_the_others(
    client: AsyncClient, server: FreeAvatarServer, tiny_parts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await robot_with_samples(client)
    assert (await client.wait_job((await client.train_renderer(first.id, **TINY)).id)).state == JobState.SUCCEEDED
    base_job = await client.wait_job((await client.finetune_animator([first.id], **TINY_ANIMATOR)).id)
    assert base_job.state == JobState.SUCCEEDED, base_job.error
    base = server.config.data_dir / "models" / first.id / "animator" / base_job.id / "animator.pt"

    monkeypatch.setenv("FREEAVATAR_ANIMATOR_BASE", str(base))  # the next worker starts from it
    second = await client.register_avatar(replace(ROBOT.spec, name="robot_two"))
    await client.upload_render_samples(second.id, robot_samples(60, seed=1))
    assert (await client.wait_job((await client.train_renderer(second.id, **TINY)).id)).state == JobState.SUCCEEDED
    added = await client.wait_job((await client.finetune_animator([second.id], **TINY_ANIMATOR)).id)
    assert added.state == JobState.SUCCEEDED, added.error

    after = load_animator(server.config.data_dir / "models" / second.id / "animator" / added.id / "animator.pt")
    before = load_animator(base)
    assert sorted(after.avatar_ids) == sorted([first.id, second.id])
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    with torch.no_grad():
        assert torch.equal(after(x, first.id), before(x, first.id))  # untouched by the new job
    assert (await client.get_avatar(second.id)).animator.version == 1
    assert (await client.get_avatar(first.id)).animator.job_id == base_job.id


def encoder_with_units(path: Path) -> Path:
    """A tiny encoder checkpoint with a 25-unit action-unit read-out, as the shipped one has."""
    torch.manual_seed(0)
    config = replace(TINY_ENCODER, au_units=25)
    torch.save({"stage": "triplet", "model_config": config.to_dict(), "model": ExpressionEncoder(config).state_dict()}, path)
    return path


def test_a_job_can_only_tune_an_animator_whose_inputs_it_computes() -> None:
    with_units, plain = ExpressionEncoder(replace(TINY_ENCODER, au_units=25)), ExpressionEncoder(TINY_ENCODER)
    check_readable(AnimatorConfig(unit_dim=25), with_units)
    check_readable(AnimatorConfig(), plain)
    with pytest.raises(ValueError, match="reads 25 action units; the encoder's read-out gives 0"):
        check_readable(AnimatorConfig(unit_dim=25), plain)
    with pytest.raises(ValueError, match="blendshapes, which animator jobs do not compute"):
        check_readable(AnimatorConfig(blendshape_dim=52), with_units)


@pytest.mark.parametrize(("readout", "keyframe_count"), [("attention", 3), ("linear", 3), ("linear", 0)])
async def test_a_job_on_a_base_that_reads_units_reads_them_too(
    client: AsyncClient, server: FreeAvatarServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readout: str,
    keyframe_count: int,
) -> None:
    """The job follows the base animator's inputs: it computes the encoder's action units for its
    actors and keyframes, and the animator it publishes reads them as the base does. Not marked
    slow (about 15 s each): the shipped base reads the units through a linear readout, so this is
    what a studio's job runs. On a linear base the avatar with keyframes is fitted to them in
    closed form, with no gradient steps, pulled towards the fit on its render samples; one
    without is tuned by the consistency objective."""
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    torch.manual_seed(0)
    base = SharedAnimator(AnimatorConfig(unit_dim=25, readout=readout))
    if readout == "linear":
        base.standardise_inputs(torch.randn(64, base.config.in_dim))
    base.add_avatar("cat", AvatarRig.from_spec(BUILTIN_AVATARS["cat"].spec))
    save_animator(base, base_dir / "animator.pt")
    encoder_with_units(base_dir / ENCODER_FILE)  # the encoder the base reads, beside it
    monkeypatch.setenv("FREEAVATAR_ANIMATOR_BASE", str(base_dir / "animator.pt"))
    monkeypatch.delenv("FREEAVATAR_ANIMATOR_ENCODER", raising=False)

    avatar = await robot_with_samples(client)
    assert (await client.wait_job((await client.train_renderer(avatar.id, **TINY)).id)).state == JobState.SUCCEEDED
    if keyframe_count:
        await client.upload_keyframes(avatar.id, keyframes(keyframe_count))
    job = await client.wait_job((await client.finetune_animator([avatar.id], **TINY_ANIMATOR)).id)
    assert job.state == JobState.SUCCEEDED, job.error
    metrics = (await client.get_avatar(avatar.id)).animator.metrics
    assert metrics["keyframes"] == keyframe_count
    # a linear fit to keyframes is pulled towards the fit on the avatar's 60 uploaded samples
    assert metrics["prior_renders"] == (60 if readout == "linear" and keyframe_count else 0)

    model_dir = server.config.data_dir / "models" / avatar.id / "animator" / job.id
    tuned = load_animator(model_dir / "animator.pt")
    assert tuned.config == base.config
    if readout == "linear":
        weights, bias = tuned.avatar_parameters(avatar.id)
        assert (metrics["steps"] == 0) == bool(keyframe_count)  # closed form, or tuned by gradient
        assert weights.abs().sum() > 0 and torch.equal(tuned.input_mean, base.input_mean)
    runtime = AnimatorRuntime.load(model_dir)
    assert runtime.unit_dim == 25
    x = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    u = torch.randn(4, 25)
    rig = runtime.predict(x.numpy(), avatar.id, units=u.numpy())
    assert rig.shape == (4, ROBOT.n_controls)
    with torch.no_grad():  # the base's avatar is untouched, through the same inputs
        assert torch.equal(tuned(animator_inputs(tuned.config, x, u), "cat"), base.eval()(torch.cat([x, u], 1), "cat"))

    # an encoder without the read-out cannot feed it: the job fails, naming the reason
    monkeypatch.setenv("FREEAVATAR_ANIMATOR_ENCODER", str(tmp_path / "plain.pt"))
    torch.save({"stage": "triplet", "model_config": TINY_ENCODER.to_dict(),
                "model": ExpressionEncoder(TINY_ENCODER).state_dict()}, tmp_path / "plain.pt")
    failed = await client.wait_job((await client.finetune_animator([avatar.id], **TINY_ANIMATOR)).id)
    assert failed.state == JobState.FAILED
    assert "action units" in failed.error
