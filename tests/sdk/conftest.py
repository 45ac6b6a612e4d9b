"""A live server (built-in avatars, real model architectures) on its own event loop thread: the
client and the server then race as they do across processes, and blocking clients can use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from freeavatar import Client
from tests.conftest import BUILTIN, ServerThread, loopback_config


@pytest.fixture
def live_thread(tmp_path: Path, untrained_models: tuple[Path, Path]) -> Iterator[ServerThread]:
    encoder, animator = untrained_models
    config = loopback_config(
        tmp_path / "data", builtin_avatars=BUILTIN, builtin_animator=animator, encoder_path=encoder
    )
    running = ServerThread(config)
    yield running
    running.stop()


@pytest.fixture
def avatar_ids(live_thread: ServerThread) -> dict[str, str]:
    """The built-in avatars' ids by name."""
    with Client(live_thread.address) as client:
        return {a.name: a.id for a in client.list_avatars()}
