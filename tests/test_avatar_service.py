"""AvatarService against a real server on a loopback port with a real SQLite store."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from freeavatar import (
    AlreadyExists,
    AsyncClient,
    Client,
    InvalidArgument,
    NotFound,
    RigControl,
    RigSpec,
)
from freeavatar._proto import avatar_pb2, avatar_pb2_grpc, rig_pb2
from freeavatar_server.app.server import FreeAvatarServer
from tests.conftest import ServerThread, loopback_config


def small_spec(name: str, controls: int = 3) -> RigSpec:
    return RigSpec(name, tuple(RigControl(f"c{i}", group="g") for i in range(controls)))


async def test_register_get_list_delete(client: AsyncClient) -> None:
    arkit = await client.register_avatar(RigSpec.arkit52("head"))
    robot = await client.register_avatar({"name": "robot", "controls": [{"name": "jaw"}]})
    assert arkit.spec == RigSpec.arkit52("head")
    assert arkit.renderer is None and arkit.animator is None
    assert (await client.get_avatar(robot.id)) == robot
    assert [a.id for a in await client.list_avatars()] == [arkit.id, robot.id]
    await client.delete_avatar(arkit.id)
    assert [a.name for a in await client.list_avatars()] == ["robot"]
    with pytest.raises(NotFound, match=arkit.id):
        await client.get_avatar(arkit.id)
    with pytest.raises(NotFound):
        await client.delete_avatar(arkit.id)


def test_blocking_client(server_thread: ServerThread, tmp_path) -> None:
    path = tmp_path / "cartoon.json"
    path.write_text(small_spec("cartoon").to_json())
    with Client(server_thread.address) as client:
        avatar = client.register_avatar(path)
        assert client.get_avatar(avatar.id).spec == small_spec("cartoon")
        assert [a.id for a in client.list_avatars()] == [avatar.id]
        with pytest.raises(AlreadyExists, match="'cartoon' is already registered"):
            client.register_avatar(small_spec("cartoon", controls=5))
        client.delete_avatar(avatar.id)
        assert client.list_avatars() == []


def control(name: str, **fields: object) -> rig_pb2.RigControl:
    values = {"min": 0.0, "max": 1.0, "default_value": 0.0} | fields
    return rig_pb2.RigControl(name=name, **values)  # type: ignore[arg-type]


BAD_SPECS = {
    "no controls": (rig_pb2.RigSpec(name="a"), "no controls"),
    "empty name": (rig_pb2.RigSpec(name="", controls=[control("x")]), "empty name"),
    "duplicate": (rig_pb2.RigSpec(name="a", controls=[control("x"), control("x")]), "'x' appears"),
    "empty control": (rig_pb2.RigSpec(name="a", controls=[control("")]), "control #0"),
    "min >= max": (rig_pb2.RigSpec(name="a", controls=[control("x", min=2.0)]), "'x': min 2"),
    "default": (
        rig_pb2.RigSpec(name="a", controls=[control("x", default_value=-1.0)]),
        "'x': default -1 is outside",
    ),
    "nan": (rig_pb2.RigSpec(name="a", controls=[control("x", max=math.nan)]), "controls[0].max is not a finite"),
    "inf": (rig_pb2.RigSpec(name="a", controls=[control("x", min=-math.inf)]), "controls[0].min is not a finite"),
    "too many": (
        rig_pb2.RigSpec(name="a", controls=[control(f"c{i}") for i in range(1025)]),
        "spec.controls has 1025 items; at most 1024",
    ),
    "alias": (
        rig_pb2.RigSpec(name="a", controls=[control("x", arkit_alias="EyeBlink_L")]),
        "'x': arkit_alias 'EyeBlink_L' is not one of ARKit's 52",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
async def test_bad_specs_are_invalid_argument_and_leave_no_row(
    server: FreeAvatarServer, client: AsyncClient, case: str
) -> None:
    spec, message = BAD_SPECS[case]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = avatar_pb2_grpc.AvatarServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.RegisterAvatar(avatar_pb2.RegisterAvatarRequest(spec=spec))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()
    assert await client.list_avatars() == []


async def test_empty_and_unknown_ids(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument, match="avatar_id is empty"):
        await client.get_avatar("")
    with pytest.raises(NotFound, match="no avatar with id 'nope'"):
        await client.get_avatar("nope")


async def test_duplicate_name_is_already_exists_and_keeps_one(client: AsyncClient) -> None:
    first = await client.register_avatar(small_spec("twin"))
    with pytest.raises(AlreadyExists):
        await client.register_avatar(small_spec("twin", controls=7))
    assert [a.id for a in await client.list_avatars()] == [first.id]


async def test_paging(server: FreeAvatarServer, client: AsyncClient) -> None:
    names = [f"a{i}" for i in range(7)]
    for name in names:
        await client.register_avatar(small_spec(name))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = avatar_pb2_grpc.AvatarServiceStub(channel)
        seen, token, pages = [], "", 0
        while True:
            page = await stub.ListAvatars(avatar_pb2.ListAvatarsRequest(page_size=3, page_token=token))
            seen += [a.spec.name for a in page.avatars]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert (seen, pages) == (names, 3)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListAvatars(avatar_pb2.ListAvatarsRequest(page_token="xyz"))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_avatars_survive_a_restart(tmp_path) -> None:
    config = loopback_config(tmp_path / "data")
    first = FreeAvatarServer(config)
    await first.start()
    async with AsyncClient(f"127.0.0.1:{first.port}") as client:
        registered = await client.register_avatar(RigSpec.arkit52("head"))
    await first.stop(grace=0)

    second = FreeAvatarServer(config)
    await second.start()
    try:
        async with AsyncClient(f"127.0.0.1:{second.port}") as client:
            assert await client.get_avatar(registered.id) == registered
    finally:
        await second.stop(grace=0)


async def test_concurrent_clients_lose_and_duplicate_nothing(server: FreeAvatarServer) -> None:
    address = f"127.0.0.1:{server.port}"

    async def register_many(worker: int) -> tuple[list[str], bool]:
        async with AsyncClient(address) as client:
            ids = [(await client.register_avatar(small_spec(f"w{worker}-{i}"))).id for i in range(50)]
            try:  # every worker races for the same name; exactly one may win
                await client.register_avatar(small_spec("contested"))
                won = True
            except AlreadyExists:
                won = False
            return ids, won

    results = await asyncio.gather(*(register_many(w) for w in range(20)))
    async with AsyncClient(address) as client:
        listed = await client.list_avatars()
    registered = [i for ids, _ in results for i in ids]
    assert len(set(registered)) == 1000
    assert sum(won for _, won in results) == 1
    assert len(listed) == 1001
    assert {a.id for a in listed} >= set(registered)
    assert len({a.name for a in listed}) == 1001


async def test_health_and_reflection(server: FreeAvatarServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "freeavatar.v1.AvatarService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
            break
    assert "freeavatar.v1.AvatarService" in names
