"""Shared fixtures: a real server on a loopback port with its SQLite store in a temp dir, and a
live one (the built-in avatars, real model architectures) with a synthetic actor's clip."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from freeavatar import AsyncClient
from freeavatar.stream import ActorFrame
from freeavatar_server.app.config import ServerConfig
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.media import encode_jpeg
from freeavatar_server.synth.avatars import BUILTIN_AVATARS


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


BUILTIN = ("human_arkit", "cartoon", "robot", "cat")


@pytest.fixture(scope="module")
def clip() -> list[bytes]:
    from freeavatar_server.tools.demo import DemoConfig, render_clip

    frames = render_clip(DemoConfig(seconds=1.0, fps=24, seed=5), lambda stage, done: None)
    return [encode_jpeg(frame) for frame in frames]


@pytest.fixture(scope="module")
def untrained_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A freshly initialised encoder (ONNX) and shared animator for the built-in avatars: the
    real architectures and runtimes, so these tests check the pipeline, not what training
    reached (that is `freeavatar eval encoder|animator` and the demo's job)."""
    import torch

    from freeavatar_server.training.animator.export import export_runtime
    from freeavatar_server.training.animator.model import (
        AnimatorConfig,
        AvatarRig,
        SharedAnimator,
        save_animator,
    )
    from freeavatar_server.training.encoder.export import export_onnx
    from freeavatar_server.training.encoder.model import ExpressionEncoder, ModelConfig

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    encoder = export_onnx(ExpressionEncoder(ModelConfig()), root / "encoder.onnx")
    animator = SharedAnimator(AnimatorConfig())
    for name in BUILTIN:
        animator.add_avatar(name, AvatarRig.from_spec(BUILTIN_AVATARS[name].spec))
    (root / "animator").mkdir()
    save_animator(animator, root / "animator" / "animator.pt")
    export_runtime(root / "animator")  # the ONNX graphs a shipped animator comes with
    return encoder, root / "animator"


@pytest.fixture
async def live(
    tmp_path: Path, untrained_models: tuple[Path, Path]
) -> AsyncIterator[tuple[FreeAvatarServer, AsyncClient, dict[str, str]]]:
    encoder, animator = untrained_models
    config = loopback_config(
        tmp_path / "data", builtin_avatars=BUILTIN, builtin_animator=animator, encoder_path=encoder
    )
    server = FreeAvatarServer(config)
    await server.start()
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        ids = {a.name: a.id for a in await client.list_avatars()}
        yield server, client, ids
    await server.stop(grace=0)


async def paced(frames: list[bytes], fps: float = 30.0) -> AsyncIterator[ActorFrame]:
    for frame in frames:
        yield ActorFrame(frame)
        await asyncio.sleep(1 / fps)
