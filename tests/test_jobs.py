"""Render samples, renderer training jobs, cancellation, crashes and restarts, through the SDK
against a real server whose jobs run in real worker processes."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from freeavatar import (
    AsyncClient,
    InvalidArgument,
    JobState,
    ModelKind,
    NotFound,
    RenderSample,
)
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.tools.bench import free_port
from tests.conftest import loopback_config
from tests.test_cli import freeavatar_command

ROBOT = BUILTIN_AVATARS["robot"]
TINY = {"image_size": 16, "steps": 40, "batch_size": 8, "time_budget_s": 60}


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def robot_samples(n: int, size: int = 32, seed: int = 0) -> list[RenderSample]:
    rigs = ROBOT.sample_rigs(n, np.random.default_rng(seed))
    return [RenderSample(tuple(r), png(i)) for r, i in zip(rigs, ROBOT.render(rigs, size), strict=True)]


async def robot_with_samples(client: AsyncClient, n: int = 60):
    avatar = await client.register_avatar(ROBOT.spec)
    await client.upload_render_samples(avatar.id, robot_samples(n))
    return avatar


async def test_upload_keeps_good_samples_and_names_bad_ones(client: AsyncClient) -> None:
    avatar = await client.register_avatar(ROBOT.spec)
    good = robot_samples(5)
    n = len(ROBOT.spec.controls)
    bad = [
        RenderSample(good[0].rig[:-1], good[0].image),
        RenderSample(good[0].rig, b"not an image"),
        RenderSample((2.0,) * n, good[0].image),
        RenderSample((float("nan"),) * n, good[0].image),
    ]
    summary = await client.upload_render_samples(avatar.id, [good[0], *bad, *good[1:]])
    assert summary.accepted == 5 and summary.total == 5
    reasons = dict(summary.rejected)
    assert sorted(reasons) == [1, 2, 3, 4]
    assert f"rig has {n - 1} values; avatar 'robot' has {n} controls" in reasons[1]
    assert "does not decode as PNG or JPEG" in reasons[2]
    assert "is outside" in reasons[3]
    assert "not a finite number" in reasons[4]
    again = await client.upload_render_samples(avatar.id, good[:2])
    assert again.total == 7
    assert (await client.get_avatar(avatar.id)).render_sample_count == 7


async def test_upload_errors(client: AsyncClient) -> None:
    with pytest.raises(NotFound, match="no avatar with id 'ghost'"):
        await client.upload_render_samples("ghost", robot_samples(1))
    with pytest.raises(InvalidArgument, match="no samples"):
        await client.upload_render_samples("ghost", [])


async def test_sample_rig_vectors_cover_each_range(client: AsyncClient) -> None:
    avatar = await client.register_avatar(ROBOT.spec)
    vectors = await client.sample_rig_vectors(avatar.id, 400, seed=3)
    lo = np.array([c.min for c in ROBOT.spec.controls])
    hi = np.array([c.max for c in ROBOT.spec.controls])
    assert vectors.shape == (400, len(lo))
    assert (vectors >= lo).all() and (vectors <= hi).all()
    assert (vectors.min(0) < lo + 0.1 * (hi - lo)).all() and (vectors.max(0) > hi - 0.1 * (hi - lo)).all()
    assert np.array_equal(vectors, await client.sample_rig_vectors(avatar.id, 400, seed=3))
    with pytest.raises(InvalidArgument, match="count must be"):
        await client.sample_rig_vectors(avatar.id, 0)


async def test_train_renderer_end_to_end(client: AsyncClient, server: FreeAvatarServer) -> None:
    avatar = await robot_with_samples(client)
    job = await client.train_renderer(avatar.id, **TINY)
    assert job.state in (JobState.QUEUED, JobState.RUNNING)
    events = [event async for event in client.watch_job(job.id)]
    progress = [e.job.progress for e in events]
    assert progress == sorted(progress)
    final = events[-1].job
    assert final.state == JobState.SUCCEEDED, final.error
    assert final.result_version == 1 and final.ended is not None
    assert "psnr" in final.metrics and "ssim" in final.metrics

    trained = await client.get_avatar(avatar.id)
    assert trained.renderer is not None and trained.renderer.version == 1
    assert trained.renderer.metrics["psnr"] == pytest.approx(final.metrics["psnr"])
    model_dir = server.config.data_dir / "models" / avatar.id / "renderer" / job.id
    assert (model_dir / "renderer.pt").exists()

    second = await client.wait_job((await client.train_renderer(avatar.id, **TINY)).id)
    assert second.result_version == 2
    versions = await client.list_model_versions(avatar.id, ModelKind.RENDERER)
    assert [(v.version, v.active) for v in versions] == [(1, False), (2, True)]
    await client.activate_model_version(avatar.id, ModelKind.RENDERER, 1)
    assert (await client.get_avatar(avatar.id)).renderer.version == 1
    with pytest.raises(NotFound, match="no renderer version 9"):
        await client.activate_model_version(avatar.id, ModelKind.RENDERER, 9)
    assert [j.id for j in await client.list_jobs(avatar.id)] == [job.id, second.id]


async def test_job_without_enough_samples_fails_with_the_reason(client: AsyncClient) -> None:
    avatar = await robot_with_samples(client, n=12)
    final = await client.wait_job((await client.train_renderer(avatar.id, **TINY)).id)
    assert final.state == JobState.FAILED
    assert "has 12 render samples; at least 50" in final.error


async def test_bad_job_requests(client: AsyncClient) -> None:
    with pytest.raises(NotFound):
        await client.train_renderer("ghost")
    avatar = await client.register_avatar(ROBOT.spec)
    with pytest.raises(InvalidArgument, match="image_size"):
        await client.train_renderer(avatar.id, image_size=100)
    with pytest.raises(NotFound):
        await client.get_job("nope")
    with pytest.raises(NotFound):
        async for _ in client.watch_job("nope"):
            pass


async def wait_for_state(client: AsyncClient, job_id: str, state: JobState) -> None:
    async for event in client.watch_job(job_id):
        if event.job.state == state:
            return
    raise AssertionError(f"job never reached {state}")


async def test_cancel_running_and_queued_jobs(client: AsyncClient) -> None:
    avatar = await robot_with_samples(client)
    long = {**TINY, "steps": 10**6, "time_budget_s": 600}
    running = await client.train_renderer(avatar.id, **long)
    queued = await client.train_renderer(avatar.id, **long)
    await wait_for_state(client, running.id, JobState.RUNNING)
    assert (await client.cancel_job(queued.id)).state == JobState.CANCELLED
    await client.cancel_job(running.id)
    final = await asyncio.wait_for(client.wait_job(running.id), timeout=20)
    assert final.state == JobState.CANCELLED
    assert (await client.get_avatar(avatar.id)).renderer is None


async def job_pid(job_id: str) -> int:
    """The job's worker process; it may still be spawning when the job is marked running."""
    for _ in range(100):
        output = subprocess.run(["pgrep", "-f", "--", f"--job-id {job_id}"], capture_output=True, text=True)
        if output.stdout.split():
            return int(output.stdout.split()[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no worker process for job {job_id}")


async def test_a_killed_job_process_fails_the_job_not_the_server(client: AsyncClient) -> None:
    avatar = await robot_with_samples(client)
    job = await client.train_renderer(avatar.id, **{**TINY, "steps": 10**6, "time_budget_s": 600})
    await wait_for_state(client, job.id, JobState.RUNNING)
    os.kill(await job_pid(job.id), signal.SIGKILL)
    final = await asyncio.wait_for(client.wait_job(job.id), timeout=20)
    assert final.state == JobState.FAILED
    assert "killed by SIGKILL" in final.error
    assert (await client.get_avatar(avatar.id)).id == avatar.id  # still serving


async def test_graceful_stop_fails_running_jobs_and_restart_keeps_records(tmp_path: Path) -> None:
    config = loopback_config(tmp_path / "data")
    first = FreeAvatarServer(config)
    await first.start()
    async with AsyncClient(f"127.0.0.1:{first.port}") as client:
        avatar = await robot_with_samples(client)
        job = await client.train_renderer(avatar.id, **{**TINY, "steps": 10**6, "time_budget_s": 600})
        await wait_for_state(client, job.id, JobState.RUNNING)
    await first.stop(grace=1)

    second = FreeAvatarServer(config)
    await second.start()
    try:
        async with AsyncClient(f"127.0.0.1:{second.port}") as client:
            record = await client.get_job(job.id)
            assert record.state == JobState.FAILED
            assert "server stopped while the job was running" in record.error
    finally:
        await second.stop(grace=0)


async def test_server_killed_mid_job(tmp_path: Path) -> None:
    """A server that dies (SIGKILL) takes its job process with it; the restarted server marks
    the job failed with the reason."""
    port = free_port()
    command = [*freeavatar_command(), "serve", "--data-dir", str(tmp_path), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            await client.wait_ready(30)
            avatar = await robot_with_samples(client)
            job = await client.train_renderer(avatar.id, **{**TINY, "steps": 10**6, "time_budget_s": 600})
            await wait_for_state(client, job.id, JobState.RUNNING)
            worker = await job_pid(job.id)
    finally:
        process.kill()
        process.wait()
    for _ in range(100):  # the orphaned worker sees its stdin close and exits
        if not Path(f"/proc/{worker}").exists():
            break
        await asyncio.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the job process outlived its server")

    restarted = FreeAvatarServer(loopback_config(tmp_path))
    await restarted.start()
    try:
        async with AsyncClient(f"127.0.0.1:{restarted.port}") as client:
            record = await client.get_job(job.id)
        assert record.state == JobState.FAILED
        assert "server stopped while the job was running" in record.error
    finally:
        await restarted.stop(grace=0)
