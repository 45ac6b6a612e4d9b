"""The store under damage: an empty, foreign, corrupt, read-only or too-new database file, a
store that turns corrupt while serving, a disk that fills mid-upload or mid-training. Each gets
an error naming the file and the fix (never a traceback or a silent empty start), health
NOT_SERVING when the store is unusable, and uploads that say exactly what was stored.

Real SQLite files in temp dirs; the full disks are real too: a small tmpfs mounted in a mount
namespace of the server process alone (tests/adversarial/namespaces.py), skipped where
`unshare` is refused."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from freeavatar import AsyncClient, JobState, RenderSample, Unavailable, UploadInterrupted
from freeavatar.wire import MAX_MESSAGE_BYTES
from freeavatar_server.app.config import ConfigError
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.store import MIGRATIONS, SqliteStore
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from tests.adversarial.namespaces import NamespacedServer, mount_namespaces_work, read_only, tmpfs
from tests.conftest import loopback_config

ROBOT = BUILTIN_AVATARS["robot"]
needs_namespaces = pytest.mark.skipif(not mount_namespaces_work(), reason="unshare (mount namespaces) refused here")


def noise_png(seed: int, size: int = 64) -> bytes:
    """An incompressible PNG (about 3 bytes a pixel): fills a disk predictably."""
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def samples(n: int, size: int = 64) -> list[RenderSample]:
    rigs = ROBOT.sample_rigs(n, np.random.default_rng(0))
    return [RenderSample(tuple(map(float, rig)), noise_png(i, size)) for i, rig in enumerate(rigs)]


def huge_png_header(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG announcing width x height pixels in a few bytes (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def store_with_samples(path: Path, n: int = 60) -> str:
    store = SqliteStore(path)
    avatar = store.add_avatar(ROBOT.spec)
    rigs = ROBOT.sample_rigs(n, np.random.default_rng(0)).astype(np.float32)
    store.add_render_samples(avatar.id, [(rig, os.urandom(3000)) for rig in rigs])
    store.close()
    return avatar.id


def corrupt_pages(path: Path) -> None:
    """Overwrite the b-tree page header of every page but the first (the file's header) with
    bytes no page starts with, as a bad sector or a stray write would: every read meets it."""
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset : offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


# Opening: files the server must refuse, by name


def empty(path: Path) -> None:
    path.write_bytes(b"")


def foreign(path: Path) -> None:
    path.write_bytes(b"these are not the bytes of an SQLite database " * 200)


def newer(path: Path) -> None:
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")


def corrupt(path: Path) -> None:
    store_with_samples(path)
    corrupt_pages(path)


@pytest.mark.parametrize(
    ("damage", "problem", "fix"),
    [
        (empty, "is empty (0 bytes)", "delete it to start with an empty store"),
        (foreign, "is not an SQLite database", "restore the file from a backup"),
        (newer, f"has schema version {len(MIGRATIONS) + 1}", "run the FreeAvatar version that wrote it"),
        (corrupt, "is corrupt (quick_check:", "restore the file from a backup"),
    ],
)
async def test_an_unusable_database_is_refused_by_name(tmp_path: Path, damage, problem: str, fix: str) -> None:
    config = loopback_config(tmp_path / "data")
    config.data_dir.mkdir()
    damage(config.store_path)
    size = config.store_path.stat().st_size
    with pytest.raises(ConfigError) as refused:
        await FreeAvatarServer(config).start()
    message = str(refused.value)
    assert str(config.store_path) in message and problem in message and fix in message, message
    assert config.store_path.stat().st_size == size  # left as found, for the operator to rescue


def test_the_cli_names_the_file_and_exits_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "freeavatar.sqlite3").write_bytes(b"")
    command = [sys.executable, "-m", "freeavatar", "serve", "--data-dir", str(tmp_path), "--port", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=os.environ | {"COLUMNS": "250"})
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "freeavatar.sqlite3 is empty (0 bytes)" in " ".join(output.split()) and "Traceback" not in output


async def health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return reply.status


async def test_a_store_that_turns_corrupt_while_serving_says_so_and_reports_not_serving(tmp_path: Path) -> None:
    server = FreeAvatarServer(loopback_config(tmp_path / "data"))
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            avatar = await client.register_avatar(ROBOT.spec)
            await client.upload_render_samples(avatar.id, samples(60, size=32))
            assert await health(server.port) == health_pb2.HealthCheckResponse.SERVING
            store = server._store
            assert store is not None
            with store._locked() as db:  # everything into the main file, then the cache dropped:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next read meets the disk, as
            corrupt_pages(store.path)  # any read past the cache would in a store of real size
            with store._locked() as db:
                db.execute("PRAGMA shrink_memory")
            with pytest.raises(Unavailable) as failed:
                await client.get_avatar(avatar.id)
            assert str(store.path) in failed.value.message and "is corrupt" in failed.value.message
            for _ in range(50):
                if await health(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.05)
            assert await health(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(grace=0)


@needs_namespaces
def test_a_read_only_store_is_refused_by_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store_with_samples(data / "freeavatar.sqlite3", n=5)
    server = NamespacedServer(read_only(data), data)
    try:
        code = server.process.wait(60)
    finally:
        output = " ".join(server.stop().split())
    assert code == 2, output
    assert f"{data / 'freeavatar.sqlite3'} cannot be written (read-only" in output and "Traceback" not in output


# Uploads: every item stored or rejected by index


async def test_one_bad_item_is_rejected_by_index_and_the_rest_stored(client: AsyncClient) -> None:
    avatar = await client.register_avatar(ROBOT.spec)
    good = samples(4, size=32)
    too_large = RenderSample(good[0].rig, good[0].image + b"\0" * MAX_MESSAGE_BYTES)  # over gRPC's limit
    bomb = RenderSample(good[0].rig, huge_png_header())
    summary = await client.upload_render_samples(avatar.id, [good[0], bomb, good[1], too_large, good[2], good[3]])
    reasons = dict(summary.rejected)
    assert sorted(reasons) == [1, 3], summary
    assert "image is too large" in reasons[1]  # the bomb: this item's rejection, not INTERNAL for the call
    assert f"over gRPC's message limit of {MAX_MESSAGE_BYTES:,} bytes (16 MB)" in reasons[3]
    assert summary.received == 6 and summary.stored == [0, 2, 4, 5]
    assert summary.accepted == 4 and summary.total == 4
    assert (await client.get_avatar(avatar.id)).render_sample_count == 4


@needs_namespaces
async def test_a_full_disk_mid_upload_reports_exactly_what_was_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = NamespacedServer(tmpfs(data, "3m"), data)  # 3 MB: about 4 batches of 64 samples
    try:
        async with AsyncClient(server.address) as client:
            await client.wait_ready(60)
            avatar = await client.register_avatar(ROBOT.spec)
            items = samples(600)  # ~12 kB each: ~7 MB
            items[3] = RenderSample(items[3].rig, b"not an image")
            with pytest.raises(UploadInterrupted) as interrupted:
                await client.upload_render_samples(avatar.id, items)
            error = interrupted.value
            summary = error.summary
            assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"the disk holding {data / 'freeavatar.sqlite3'} is full" in error.message
            stored_count = (await client.get_avatar(avatar.id)).render_sample_count
            assert summary.accepted == stored_count == len(summary.stored) > 0
            # stored: every good item up to the batch the disk could not take, which was rejected
            assert summary.stored == [i for i in range(summary.accepted + 1) if i != 3]
            assert 0 < summary.received < len(items)
            reasons = dict(summary.rejected)
            assert "does not decode" in reasons.pop(3)
            assert sorted(reasons) == list(range(summary.accepted + 1, summary.received))
            assert all("not stored: the disk holding" in r for r in reasons.values())
            assert await health(server.port) == health_pb2.HealthCheckResponse.SERVING  # full, not broken
            with pytest.raises(UploadInterrupted) as again:  # a full disk stays a clear error
                await client.upload_render_samples(avatar.id, items[:80])
            assert again.value.summary.accepted == 0 and again.value.summary.received == 65  # 64 good, 1 bad
    finally:
        server.stop()


# Training: a full disk fails the job clearly and leaves no model file


@needs_namespaces
async def test_a_training_job_on_a_full_disk_says_so_and_leaves_no_model(tmp_path: Path) -> None:
    data = tmp_path / "data"
    models = data / "models"
    server = NamespacedServer(tmpfs(models, "16k"), data)  # the store has room; the models do not
    try:
        async with AsyncClient(server.address) as client:
            await client.wait_ready(60)
            avatar = await client.register_avatar(ROBOT.spec)
            await client.upload_render_samples(avatar.id, samples(60, size=32))
            job = await client.train_renderer(avatar.id, image_size=16, steps=20, batch_size=8, time_budget_s=60)
            final = await asyncio.wait_for(client.wait_job(job.id), timeout=120)
            assert final.state == JobState.FAILED
            assert f"the disk holding {models / avatar.id / 'renderer'} is full" in final.error, final.error
            assert "is full (No space left on device writing renderer.pt)" in final.error
            assert "free space there and run the job again" in final.error
            assert (await client.get_avatar(avatar.id)).renderer is None
            job_dir = server.path(models / avatar.id / "renderer")  # on the server's tmpfs
            assert server.path(models).is_dir()
            left = [p.name for p in job_dir.rglob("*")] if job_dir.exists() else []
            assert left == []  # no truncated renderer.pt, no .partial directory
    finally:
        server.stop()
