"""Two servers of one cluster in this process (real NATS, real PostgreSQL, real gRPC on
loopback): a session made on one is served by the other, frames cross, and changes travel."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from freeavatar import AsyncClient, JobKind, JobState, ModelKind, OutputProtocol
from freeavatar._proto import job_pb2
from freeavatar.errors import NotFound, StreamEnded
from freeavatar.stream import ActorFrame
from freeavatar_server.app.config import ConfigError
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.tools.cluster_services import LocalNats
from tests.conftest import loopback_config, paced
from tests.test_engine_outputs import udp_receiver


def cluster_config(data_dir: Path, nats: LocalNats, store_url: str, **overrides: object):
    return loopback_config(data_dir, cluster_url=nats.url, store_url=store_url, **overrides)


@pytest.fixture
async def pair(tmp_path: Path, nats: LocalNats, store_url: str) -> AsyncIterator[list[tuple[FreeAvatarServer, AsyncClient]]]:
    shared = tmp_path / "shared"  # the data dir every server of the cluster mounts
    servers = []
    for _ in range(2):
        server = FreeAvatarServer(cluster_config(shared, nats, store_url, builtin_avatars=("robot",)))
        await server.start()
        servers.append((server, AsyncClient(f"127.0.0.1:{server.port}")))
    yield servers
    for server, client in servers:
        await client.close()
        await server.stop(grace=0)


async def test_a_session_made_on_one_server_streams_to_a_subscriber_on_the_other(pair, clip) -> None:
    (_, a), (_, b) = pair
    robot = next(x for x in await a.list_avatars() if x.name == "robot")
    assert [x.id for x in await b.list_avatars()] == [robot.id]  # one registry
    session = await a.create_session("meeting")
    actor = await a.join_session(session.id, [robot.id], "ada", token=session.token)
    heard = b.subscribe(session.id, token=session.token)
    received = []

    async def listen() -> None:
        async for frame in heard:
            received.append(frame)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)  # the subscription reaches NATS
    sent = [f async for f in a.animate(paced(clip), session_id=session.id, actor_id=actor.id, token=session.token)]
    await asyncio.sleep(0.3)
    await heard.aclose()
    await asyncio.gather(listener, return_exceptions=True)
    assert sent and len(received) >= len(sent) - 2  # loopback: nothing lost but the last in flight
    assert [f.sequence for f in received] == sorted(f.sequence for f in received)
    assert received[0].controls is not None and received[0].controls.avatar_name == "robot"
    assert {f.actor_id for f in received} == {actor.id}
    cluster = next(s for s in (await b.get_stats()).stages if s.name == "cluster")
    assert cluster.processed >= len(received) and cluster.dropped == 0  # what crossed, what was lost
    # the actor may stream through either server: the session and actor are in PostgreSQL
    again = [f async for f in b.animate(paced(clip[:5]), session_id=session.id, actor_id=actor.id, token=session.token)]
    assert again
    # closing on one server ends the other's subscribers with SESSION_CLOSED
    late = b.subscribe(session.id, token=session.token)
    ending = asyncio.create_task(anext(aiter(late), None))
    await asyncio.sleep(0.3)
    await a.close_session(session.id, token=session.token)
    with pytest.raises(StreamEnded) as ended:
        await asyncio.wait_for(ending, 5)
    assert ended.value.reason == "SESSION_CLOSED"
    with pytest.raises(NotFound):
        await b.get_session(session.id)


async def test_cluster_settings_are_checked(tmp_path: Path, nats: LocalNats, store_url: str) -> None:
    with pytest.raises(ConfigError, match="go together"):
        FreeAvatarServer(loopback_config(tmp_path, cluster_url=nats.url))
    with pytest.raises(ConfigError, match="carries a password"):
        FreeAvatarServer(cluster_config(tmp_path, nats, "postgresql://u:secret@127.0.0.1/db"))
    with pytest.raises(ConfigError, match="carries credentials"):
        FreeAvatarServer(loopback_config(tmp_path, cluster_url="nats://u:p@127.0.0.1:4222", store_url=store_url))
    server = FreeAvatarServer(loopback_config(tmp_path, cluster_url="nats://127.0.0.1:1", store_url=store_url))
    with pytest.raises(ConfigError, match="cannot reach NATS at nats://127.0.0.1:1"):
        await server.start()


async def test_a_new_model_version_reaches_the_other_server_without_a_restart(pair, tmp_path: Path) -> None:
    (server_a, a), (server_b, _) = pair
    robot = next(x for x in await a.list_avatars() if x.name == "robot")
    models_b = server_b._live.models
    await models_b.ensure(robot.id)
    first = models_b.animator_ref(robot.id).path
    shared = tmp_path / "shared"
    second_dir = shared / "models" / robot.id / "animator" / "second"
    shutil.copytree(Path(first), second_dir)
    store = server_a._store
    await asyncio.to_thread(
        store.publish_model, "", robot.id, ModelKind.ANIMATOR.value, {}, str(second_dir.relative_to(shared))
    )  # stored, told to nobody yet
    await a.activate_model_version(robot.id, ModelKind.ANIMATOR, 2)  # through A: B hears of it
    for _ in range(50):
        if models_b.animator_ref(robot.id).path == str(second_dir):
            break
        await asyncio.sleep(0.1)
    assert models_b.animator_ref(robot.id).path == str(second_dir)


async def test_a_job_whose_server_stopped_beating_fails_naming_it(pair) -> None:
    (server_a, a), _ = pair
    store = server_a._store
    # a server that claimed a job and started it, then died: its heartbeat is 10 s old (written
    # as one row, already running: the live servers' runners would claim a queued one first)
    with store._locked() as db:
        db.execute(
            "INSERT INTO jobs (id, kind, state, avatar_ids, options, created_us, server_id) "
            "VALUES ('dead-job', %s, %s, '[]', '', 0, 'gone-server')",
            (JobKind.RENDERER_TRAINING.value, job_pb2.JOB_STATE_RUNNING),
        )
        db.execute("INSERT INTO servers (id, heartbeat_at) VALUES ('gone-server', now() - interval '10 seconds')")
    final = await asyncio.wait_for(a.wait_job("dead-job"), timeout=10)  # a live server's reaper
    assert final.state == JobState.FAILED
    assert final.error == "the server gone-server running the job stopped (no heartbeat for 5 s)"


async def test_an_output_on_one_server_hears_an_actor_on_the_other_and_leaving_there_ends_it(pair, clip) -> None:
    (_, a), (_, b) = pair
    robot = next(x for x in await a.list_avatars() if x.name == "robot")
    session = await a.create_session("stage")
    actor = await a.join_session(session.id, [robot.id], "ada", token=session.token)
    transport, vmc_app, port = await udp_receiver()
    await b.add_output(session.id, robot.id, OutputProtocol.VMC, f"127.0.0.1:{port}", token=session.token)
    await asyncio.sleep(0.3)
    stop = asyncio.Event()

    async def camera():
        index = 0
        while not stop.is_set():
            yield ActorFrame(clip[index % len(clip)])
            index += 1
            await asyncio.sleep(1 / 30)

    stream = a.animate(camera(), session_id=session.id, actor_id=actor.id, token=session.token)
    own = []

    async def read() -> None:
        async for frame in stream:
            own.append(frame)

    reader = asyncio.create_task(read())
    try:
        for _ in range(100):  # VMC packets from B, made from A's frames
            if len(vmc_app.received) >= 10:
                break
            await asyncio.sleep(0.1)
        assert len(vmc_app.received) >= 10
        await b.leave_session(session.id, actor.id, token=session.token)  # on B: her stream on A ends
        with pytest.raises(StreamEnded) as ended:
            await asyncio.wait_for(reader, 5)
        assert ended.value.reason == "ACTOR_LEFT"
    finally:
        stop.set()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        transport.close()
