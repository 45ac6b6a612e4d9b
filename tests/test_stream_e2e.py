"""The live pipeline end to end: synthetic actor video in through the SDK, rig frames out,
with the shipped encoder, face finder and built-in avatars' animator on a real server."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from freeavatar import InvalidArgument, ModelKind
from freeavatar._proto import stream_pb2, stream_pb2_grpc
from freeavatar.stream import ActorFrame, RigFrame
from freeavatar_server.media import encode_jpeg
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from tests.conftest import paced


def resident_mb() -> float:
    """This process's resident memory (client and server both live here)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.parametrize("batch_frames", [True, False], ids=["batched", "one-per-avatar"])
async def test_clip_in_rig_frames_out(live, clip: list[bytes], batch_frames: bool) -> None:
    server, client, ids = live
    stream = client.animate(paced(clip), avatar_ids=list(ids.values()), batch_frames=batch_frames)
    frames: list[RigFrame] = [frame async for frame in stream]
    assert set(stream.controls) == set(ids.values())
    for name, avatar_id in ids.items():
        mine = [f for f in frames if f.avatar_id == avatar_id]
        spec = BUILTIN_AVATARS[name].spec
        assert len(mine) >= len(clip) // 2  # latest frame wins: some may drop, most arrive
        assert [f.sequence for f in mine] == list(range(1, len(mine) + 1))
        values = np.stack([f.values for f in mine])
        assert values.shape[1] == len(spec.controls)
        assert (values >= np.array([c.min for c in spec.controls]) - 1e-5).all()
        assert (values <= np.array([c.max for c in spec.controls]) + 1e-5).all()
        assert mine[0].controls.control_names == tuple(spec.control_names)
        assert np.mean([f.face_present for f in mine]) > 0.8
        assert all(f.emit_time_us >= f.capture_time_us > 0 for f in mine)
    assert values.std(axis=0).max() > 0  # a new face crop every frame: the rig follows it
    # the ARKit avatar's noseSneer, which MediaPipe's blendshapes never move, follows its animator
    arkit = np.stack([f.values for f in frames if f.avatar_id == ids["human_arkit"]])
    assert arkit[:, BUILTIN_AVATARS["human_arkit"].spec.control_names.index("noseSneerLeft")].std() > 0


async def test_no_face_eases_to_neutral(live) -> None:
    _, client, ids = live
    blank = encode_jpeg(np.full((240, 320, 3), 90, np.uint8))
    robot = BUILTIN_AVATARS["robot"].spec
    frames = [f async for f in client.animate(paced([blank] * 12), avatar_ids=[ids["robot"]])]
    assert frames and not any(f.face_present for f in frames)
    assert frames[-1].values == pytest.approx(robot.defaults, abs=1e-3)


async def test_corrupt_frame_is_a_clear_error_and_the_server_carries_on(live, clip) -> None:
    _, client, ids = live

    async def with_corrupt() -> AsyncIterator[ActorFrame]:
        yield ActorFrame(clip[0])
        await asyncio.sleep(0.2)
        yield ActorFrame(b"\xff\xd8 definitely not a jpeg")
        await asyncio.sleep(1.0)

    with pytest.raises(InvalidArgument, match="frame 2: image does not decode"):
        async for _ in client.animate(with_corrupt(), avatar_ids=[ids["robot"]]):
            pass
    again = [f async for f in client.animate(paced(clip[:5]), avatar_ids=[ids["robot"]])]
    assert again


async def test_real_photograph(live) -> None:
    from skimage import data

    _, client, ids = live
    photo = encode_jpeg(data.astronaut())
    frames = [f async for f in client.animate(paced([photo] * 12), avatar_ids=[ids["human_arkit"]])]
    assert frames and frames[-1].face_present
    # she smiles: by default the ARKit avatar's smile follows the real-face blendshapes (the
    # animator here is untrained), and her jaw stays shut
    face = frames[-1].as_dict()
    assert np.mean([face["mouthSmileLeft"], face["mouthSmileRight"]]) > 0.4 and face["jawOpen"] < 0.2, face


async def test_session_subscribers_and_a_reader_that_never_reads(live, clip) -> None:
    server, client, ids = live
    session = await client.create_session("meeting")
    ada = await client.join_session(session.id, [ids["robot"], ids["cartoon"]], "ada", session.token)
    listener = client.subscribe(session.id, avatar_ids=[ids["robot"]], token=session.token)
    # An engine that stops reading: with a small HTTP/2 window the transport fills at once and
    # the server's drop-oldest buffer takes over.
    stalled_channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}",
        options=[("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)],
    )
    stalled = stream_pb2_grpc.StreamServiceStub(stalled_channel).Subscribe(
        stream_pb2.SubscribeRequest(session_id=session.id, session_token=session.token)
    )
    first = asyncio.create_task(anext(listener))
    await asyncio.sleep(0.2)
    actor_frames = [
        f async for f in client.animate(paced(clip), session_id=session.id, actor_id=ada.id, token=session.token)
    ]
    heard = [await first]
    while len(heard) < 5:
        heard.append(await asyncio.wait_for(anext(listener), 5))
    assert {f.avatar_id for f in heard} == {ids["robot"]}
    assert {f.avatar_id for f in actor_frames} == {ids["robot"], ids["cartoon"]}
    stats = await client.get_stats()
    assert stats.subscriber_drops > 0  # the stalled subscriber lost old frames...
    assert len(actor_frames) >= len(clip)  # ...and nobody else slowed down for it
    await listener.aclose()
    stalled.cancel()
    await stalled_channel.close()
    await client.close_session(session.id)


async def test_rebind_delete_and_hot_swap_while_streaming(live, clip) -> None:
    server, client, ids = live
    session = await client.create_session()
    actor = await client.join_session(session.id, [ids["robot"]], token=session.token)
    seen: list[RigFrame] = []

    async def camera() -> AsyncIterator[ActorFrame]:
        for index in range(60):
            if index == 15:
                await client.rebind_actor(session.id, actor.id, [ids["robot"], ids["cartoon"]])
            if index == 30:  # re-activating the version swaps the model without a drop
                await client.activate_model_version(ids["robot"], ModelKind.ANIMATOR, 1)
            if index == 40:
                await client.delete_avatar(ids["cartoon"])
            yield ActorFrame(clip[index % len(clip)])
            await asyncio.sleep(1 / 30)

    async for frame in client.animate(camera(), session_id=session.id, actor_id=actor.id):
        seen.append(frame)
    robot = [f.sequence for f in seen if f.avatar_id == ids["robot"]]
    cartoon = [f for f in seen if f.avatar_id == ids["cartoon"]]
    assert robot == list(range(1, len(robot) + 1)) and len(robot) >= 45
    assert cartoon and len(cartoon) < len(robot)


def worker_pids(server) -> list[int]:
    return [w.pid for w in server._live._analysis.workers if w.pid is not None]


def resident_mb_of(pids: list[int]) -> float:
    return sum(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) for pid in pids) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_a_dead_analysis_worker_is_replaced_and_the_stream_goes_on(live, clip) -> None:
    server, client, ids = live
    killed: list[tuple[int, int]] = []  # (pid, time of the kill on the capture clock, us)
    after: list[RigFrame] = []  # rig frames of frames captured after the kill

    async def camera() -> AsyncIterator[ActorFrame]:
        started = time.monotonic()
        for index in range(100_000):
            if index == len(clip):  # a second in, the actor's analysis worker dies
                (busy,) = [w for w in server._live._analysis.workers if w.streams]
                killed.append((busy.pid, time.time_ns() // 1000))
                os.kill(busy.pid, signal.SIGKILL)
            if len(after) >= 10 or time.monotonic() - started > 30:  # a new worker took over
                return
            yield ActorFrame(clip[index % len(clip)], capture_time_us=time.time_ns() // 1000)
            await asyncio.sleep(1 / 30)

    async for frame in client.animate(camera(), avatar_ids=[ids["robot"]]):  # one call throughout
        if killed and frame.capture_time_us > killed[0][1]:
            after.append(frame)
    (dead_pid, _), = killed
    assert len(after) >= 10 and np.mean([f.face_present for f in after]) > 0.8
    workers = server._live._analysis.workers
    assert sum(w.restarts for w in workers) == 1 and dead_pid not in worker_pids(server)
    again = [f async for f in client.animate(paced(clip[:6]), avatar_ids=[ids["cartoon"]])]
    assert again and again[-1].face_present


async def test_many_connects_and_disconnects_leak_no_tasks(live, clip) -> None:
    server, client, ids = live

    async def one_call() -> None:
        stream = client.animate(paced(clip[:2]), avatar_ids=[ids["robot"]])
        await anext(stream)
        await stream.aclose()  # disconnect mid-stream

    for _ in range(10):  # warm: allocator pools, gRPC and ONNX Runtime buffers
        await one_call()
    gc.collect()
    workers = worker_pids(server)
    baseline_tasks, baseline_rss = len(asyncio.all_tasks()), resident_mb()
    baseline_workers_rss = resident_mb_of(workers)
    for _ in range(100):
        await one_call()
    await asyncio.sleep(0.5)
    gc.collect()
    assert len(asyncio.all_tasks()) <= baseline_tasks + 2
    grown = resident_mb() - baseline_rss
    grown_workers = resident_mb_of(workers) - baseline_workers_rss
    print(f"100 animate calls: resident memory grew {grown:.1f} MB here, {grown_workers:.1f} MB in the workers")
    assert grown < 40  # a leak of one 640x480 frame per call would be ~90 MB
    assert grown_workers < 40  # ...and a face tracker kept per call, its frames with it
    assert worker_pids(server) == workers  # nothing died on the way
    stats = await client.get_stats()
    assert stats.active_sessions == 0 and stats.active_actors == 0

