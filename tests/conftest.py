"""Shared fixtures: a real server on a loopback port with its SQLite store in a temp dir."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from freeavatar import AsyncClient
from freeavatar_server.config import ServerConfig
from freeavatar_server.server import FreeAvatarServer


def loopback_config(data_dir: Path, **overrides: object) -> ServerConfig:
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": 0} | overrides
    return ServerConfig(data_dir=data_dir, **settings)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[FreeAvatarServer]:
    running = FreeAvatarServer(loopback_config(tmp_path / "data"))
    await running.start()
    yield running
    await running.stop(grace=0)


@pytest.fixture
async def client(server: FreeAvatarServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"127.0.0.1:{server.port}") as connected:
        yield connected


class ServerThread:
    """A real server on its own event loop thread, for blocking clients and CLI tests."""

    def __init__(self, config: ServerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server = FreeAvatarServer(config)
        self.port = self._run(self.server.start())
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._run(self.server.stop(grace=0))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)


@pytest.fixture
def server_thread(tmp_path: Path) -> Iterator[ServerThread]:
    running = ServerThread(loopback_config(tmp_path / "data"))
    yield running
    running.stop()
