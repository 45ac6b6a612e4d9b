"""Streams the server ends (shutdown, LeaveSession, CloseSession) finish with a non-OK status
and a reason a program can read, not a bare OK: the SDK raises StreamEnded; any gRPC client
sees the status and the "freeavatar-stream-end" trailer. The end of the actor's own input is
still a clean end. Who may end a meeting: whoever holds the session's token, not any API key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from freeavatar import AsyncClient, PermissionDenied, StreamEnded
from freeavatar._proto import stream_pb2, stream_pb2_grpc
from freeavatar.stream import ActorFrame
from freeavatar.wire import STREAM_END_KEY
from freeavatar_server.app.server import FreeAvatarServer
from tests.conftest import loopback_config


async def started(stream: AsyncIterator[object]) -> asyncio.Task[list[object]]:
    """Iterate `stream` in a task; returns once the server has taken the call."""
    task = asyncio.create_task(_drain(stream))
    await asyncio.sleep(0.3)
    return task


async def _drain(stream: AsyncIterator[object]) -> list[object]:
    return [item async for item in stream]


async def test_close_session_ends_its_subscribers_with_session_closed(client: AsyncClient) -> None:
    session = await client.create_session()
    listening = await started(client.subscribe(session.id))
    await client.close_session(session.id)
    with pytest.raises(StreamEnded) as ended:
        await asyncio.wait_for(listening, 5)
    assert ended.value.reason == "SESSION_CLOSED" and ended.value.code == grpc.StatusCode.ABORTED
    assert "the session was closed" in ended.value.message


async def test_any_grpc_client_reads_the_status_and_the_trailer(client: AsyncClient, server: FreeAvatarServer) -> None:
    session = await client.create_session()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = stream_pb2_grpc.StreamServiceStub(channel).Subscribe(stream_pb2.SubscribeRequest(session_id=session.id))
        await call.initial_metadata()
        await client.close_session(session.id)
        assert await call.code() == grpc.StatusCode.ABORTED
        trailers = dict(await call.trailing_metadata())
        assert trailers[STREAM_END_KEY] == "STREAM_END_SESSION_CLOSED"


async def test_shutdown_ends_streams_with_server_shutdown(tmp_path: Path) -> None:
    server = FreeAvatarServer(loopback_config(tmp_path / "data"))
    await server.start()
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        session = await client.create_session()
        listening = await started(client.subscribe(session.id))
        await server.stop(grace=2)
        with pytest.raises(StreamEnded) as ended:
            await asyncio.wait_for(listening, 5)
    assert ended.value.reason == "SERVER_SHUTDOWN" and ended.value.code == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in ended.value.message


async def endless(frames: list[bytes]) -> AsyncIterator[ActorFrame]:
    index = 0
    while True:
        yield ActorFrame(frames[index % len(frames)])
        index += 1
        await asyncio.sleep(1 / 30)


async def test_leave_session_ends_the_actors_animate_call_with_actor_left(live, clip) -> None:
    server, client, ids = live
    session = await client.create_session()
    actor = await client.join_session(session.id, [ids["robot"]], token=session.token)
    stream = client.animate(endless(clip), session_id=session.id, actor_id=actor.id, token=session.token)
    await asyncio.wait_for(anext(stream), 30)  # streaming
    await client.leave_session(session.id, actor.id, token=session.token)
    with pytest.raises(StreamEnded) as ended:
        async with asyncio.timeout(5):
            async for _ in stream:
                pass
    assert ended.value.reason == "ACTOR_LEFT" and "left the session" in ended.value.message
    # and the end of an actor's own input is still a clean end: no exception
    frames = [f async for f in client.animate(clip[:5], avatar_ids=[ids["robot"]])]
    assert frames


async def test_ending_or_changing_a_meeting_takes_its_token(tmp_path: Path) -> None:
    """Decided: on a server with API keys, rebind, leave, close and remove-output take the
    session token, as join and subscribe do; another tenant's API key is not enough."""
    keys = tmp_path / "keys"
    keys.write_text("alice\nmallory\n")
    server = FreeAvatarServer(loopback_config(tmp_path / "data", api_key_file=keys))
    await server.start()
    try:
        async with (
            AsyncClient(f"127.0.0.1:{server.port}", api_key="alice") as alice,
            AsyncClient(f"127.0.0.1:{server.port}", api_key="mallory") as mallory,
        ):
            session = await alice.create_session()
            actor = await alice.join_session(session.id, [], actor_name="ada", token=session.token)
            attempts = [
                mallory.rebind_actor(session.id, actor.id, []),
                mallory.leave_session(session.id, actor.id),
                mallory.remove_output(session.id, "any"),
                mallory.close_session(session.id),
            ]
            for attempt in attempts:
                with pytest.raises(PermissionDenied, match="session token"):
                    await attempt
            assert [a.id for a in (await alice.get_session(session.id)).actors] == [actor.id]
            await alice.rebind_actor(session.id, actor.id, [], token=session.token)
            await alice.leave_session(session.id, actor.id, token=session.token)
            await alice.close_session(session.id, token=session.token)
    finally:
        await server.stop(grace=0)
