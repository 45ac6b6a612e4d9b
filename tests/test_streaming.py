"""The stream service through the SDK against a real server: sessions, refusals, bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from freeavatar import (
    AsyncClient,
    ExpressionReader,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RigControl,
    RigSpec,
)
from freeavatar._proto import stream_pb2, stream_pb2_grpc
from freeavatar_server.app.server import FreeAvatarServer
from tests.conftest import loopback_config


async def test_session_lifecycle(client: AsyncClient) -> None:
    session = await client.create_session("standup")
    assert session.token and session.name == "standup"
    fetched = await client.get_session(session.id)
    assert fetched.token == "" and fetched.actors == ()
    await client.close_session(session.id)
    with pytest.raises(NotFound, match="no session"):
        await client.get_session(session.id)


async def test_binding_an_avatar_without_animator_names_what_is_missing(client: AsyncClient) -> None:
    session = await client.create_session()
    avatar = await client.register_avatar(RigSpec("head", (RigControl("jaw", arkit_alias="jawOpen"), RigControl("grin"))))
    with pytest.raises(FailedPrecondition, match="avatar 'head' has no tuned animator"):
        await client.join_session(session.id, [avatar.id])
    # every control of an ARKit rig follows the blendshapes: it streams with no animator at all
    arkit = await client.register_avatar(RigSpec.arkit52("arkit_head"))
    await client.join_session(session.id, [arkit.id])
    with pytest.raises(NotFound, match="no avatar with id 'ghost'"):
        await client.join_session(session.id, ["ghost"])
    stream = client.animate([np.zeros((8, 8, 3), np.uint8)], avatar_ids=[avatar.id])
    with pytest.raises(FailedPrecondition, match="no tuned animator|no expression encoder"):
        async for _ in stream:
            pass


async def test_an_arkit_rig_streams_when_its_optional_animator_cannot_load(server: FreeAvatarServer, client: AsyncClient, monkeypatch) -> None:
    """Under AUTO an all-ARKit rig's cheekSquint and noseSneer would follow its animator, which
    it may have; when none loads (a model that does not drive it, a file gone) it binds all the
    same, as it did before it wanted one."""
    from freeavatar_server.live.models import AnimatorMissing

    async def refuse(avatar_id: str) -> None:
        raise AnimatorMissing("arkit_head")

    monkeypatch.setattr(server._live.models, "refresh", refuse)
    session = await client.create_session()
    arkit = await client.register_avatar(RigSpec.arkit52("arkit_head"))
    actor = await client.join_session(session.id, [arkit.id])
    assert actor.id


async def test_animate_must_open_with_start(server: FreeAvatarServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = stream_pb2_grpc.StreamServiceStub(channel)
        call = stub.Animate(iter([stream_pb2.AnimateRequest(frame=stream_pb2.ActorFrame())]))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must open with AnimateStart" in raised.value.details()


async def test_missing_encoder_is_a_failed_precondition(tmp_path: Path) -> None:
    config = loopback_config(tmp_path, encoder_path=tmp_path / "none.onnx")
    server = FreeAvatarServer(config)
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            stream = client.animate([], avatar_ids=["x"])
            with pytest.raises(FailedPrecondition, match="no expression encoder"):
                async for _ in stream:
                    pass
    finally:
        await server.stop(grace=0)


async def test_keyed_servers_need_the_session_token(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k\n")
    server = FreeAvatarServer(loopback_config(tmp_path / "data", api_key_file=keys))
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}", api_key="k") as client:
            session = await client.create_session()
            with pytest.raises(PermissionDenied, match="session token"):
                async for _ in client.subscribe(session.id, token="wrong"):
                    pass
            with pytest.raises(PermissionDenied):
                await client.join_session(session.id, [], token="")
            actor = await client.join_session(session.id, [], actor_name="ada", token=session.token)
            assert (await client.get_session(session.id)).actors[0].id == actor.id
    finally:
        await server.stop(grace=0)


async def test_subscribe_to_unknown_session(client: AsyncClient) -> None:
    with pytest.raises(NotFound):
        async for _ in client.subscribe("nope"):
            pass
    with pytest.raises(InvalidArgument, match="session_id is empty"):
        async for _ in client.subscribe(""):
            pass


async def test_stats_call_and_prometheus_endpoint(tmp_path: Path) -> None:
    import urllib.request

    server = FreeAvatarServer(loopback_config(tmp_path, metrics_port=0))
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.create_session("one")
            stats = await client.get_stats()
            assert stats.active_sessions == 1
            assert {s.name for s in stats.stages} == {"decode", "mesh", "follow", "pose", "encode", "animate", "handoff", "publish"}
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        assert "freeavatar_sessions 1.0" in body
        assert 'freeavatar_stage_ms{quantile="0.99",stage="encode"}' in body
    finally:
        await server.stop(grace=0)


async def test_oversized_frame_is_refused_and_the_server_carries_on(client: AsyncClient) -> None:
    from freeavatar import FreeAvatarError

    session = await client.create_session()
    actor = await client.join_session(session.id, [])
    oversized = b"\xff\xd8" + bytes(17 * 1024 * 1024)  # over the server's 16 MiB message limit
    with pytest.raises(FreeAvatarError) as raised:
        async for _ in client.animate([oversized], session_id=session.id, actor_id=actor.id):
            pass
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await client.get_session(session.id)).actors[0].id == actor.id  # the session lives on
    assert (await client.create_session("still serving")).token


async def test_each_binding_chooses_its_expression_reader(client: AsyncClient) -> None:
    session = await client.create_session()
    arkit = await client.register_avatar(RigSpec.arkit52("reader_head"))
    plain = await client.register_avatar(RigSpec("reader_plain", (RigControl("antenna"),)))
    actor = await client.join_session(session.id, [arkit.id], reader=ExpressionReader.BLENDSHAPES)
    assert actor.readers == (ExpressionReader.BLENDSHAPES,)
    with pytest.raises(FailedPrecondition, match="no tuned animator"):  # the animator reader needs one
        await client.rebind_actor(session.id, actor.id, [arkit.id], reader=ExpressionReader.ANIMATOR)
    with pytest.raises(InvalidArgument, match="no control with an ARKit alias"):
        await client.join_session(session.id, [plain.id], reader=ExpressionReader.BLENDSHAPES)
