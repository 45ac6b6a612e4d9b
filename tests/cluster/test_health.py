"""A cluster's server says in its health check when NATS or PostgreSQL is away, gives calls
that need them a clear error, and serves again once they are back: no restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from freeavatar import AsyncClient, Unavailable
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.tools.cluster_services import LocalPostgres
from tests.cluster.conftest import _require_services
from tests.conftest import loopback_config

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL of this test's own, since it stops it."""
    _require_services()
    running = LocalPostgres().start()
    yield running
    running.stop()


async def wait_health(port: int, wanted: int, timeout_s: float = 10.0) -> float:
    started = time.monotonic()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() - started < timeout_s:
            if (await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status == wanted:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
    raise AssertionError(f"health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)}")


async def test_nats_or_postgres_away_is_not_serving_until_back(tmp_path: Path, nats, own_postgres) -> None:
    store_url = own_postgres.create_database("health")
    server = FreeAvatarServer(loopback_config(tmp_path, cluster_url=nats.url, store_url=store_url))
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await wait_health(server.port, SERVING)
            nats.stop()
            await wait_health(server.port, NOT_SERVING)
            nats.start()  # on the same port
            await wait_health(server.port, SERVING)

            own_postgres.stop(remove=False)
            await wait_health(server.port, NOT_SERVING)
            with pytest.raises(Unavailable, match=rf"PostgreSQL freeavatar@127.0.0.1:{own_postgres.port}/health cannot be reached"):
                await client.list_avatars()
            own_postgres.start()
            await wait_health(server.port, SERVING)
            assert await client.list_avatars() == []
    finally:
        await server.stop(grace=0)
