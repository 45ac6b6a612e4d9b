"""Caps per caller (an API key; the client's address on a server without keys): sessions,
animate/subscribe streams and WebRTC peers past their cap get RESOURCE_EXHAUSTED (HTTP 429 for
WHIP/WHEP) naming the cap's flag, other callers are not affected, and ending one frees a place.
The probe was 1,000 WHIP POSTs without DELETE, all accepted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from freeavatar import AsyncClient, ResourceExhausted
from freeavatar_server.app.config import ConfigError, ServerConfig
from freeavatar_server.app.server import FreeAvatarServer
from tests.conftest import loopback_config
from tests.test_webrtc import an_offer


@pytest.fixture
async def keyed(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("alice\nbob\n")
    server = FreeAvatarServer(
        loopback_config(tmp_path / "data", api_key_file=keys, max_sessions_per_key=2, max_streams_per_key=1)
    )
    await server.start()
    yield server
    await server.stop(grace=0)


async def test_sessions_per_key(keyed: FreeAvatarServer) -> None:
    address = f"127.0.0.1:{keyed.port}"
    async with AsyncClient(address, api_key="alice") as alice, AsyncClient(address, api_key="bob") as bob:
        first, _ = await alice.create_session(), await alice.create_session()
        with pytest.raises(ResourceExhausted, match=r"already has 2 sessions open.*--max-sessions-per-key"):
            await alice.create_session()
        await bob.create_session()  # another key has its own cap
        await alice.close_session(first.id, token=first.token)
        await alice.create_session()  # closing one gives its place back


async def test_streams_per_key(keyed: FreeAvatarServer) -> None:
    async with AsyncClient(f"127.0.0.1:{keyed.port}", api_key="alice") as alice:
        session = await alice.create_session()
        listening = alice.subscribe(session.id, token=session.token)
        task = asyncio.create_task(anext(listening, None))
        await asyncio.sleep(0.3)
        with pytest.raises(ResourceExhausted, match=r"already has 1 streams open.*--max-streams-per-key"):
            async for _ in alice.subscribe(session.id, token=session.token):
                pass
        await listening.aclose()
        task.cancel()
        await asyncio.sleep(0.3)  # the server sees the call end
        again = alice.subscribe(session.id, token=session.token)
        with pytest.raises(TimeoutError):  # accepted: it waits for frames
            await asyncio.wait_for(anext(again), 0.5)
        await again.aclose()


def test_caps_are_configured_and_checked() -> None:
    with pytest.raises(ConfigError, match="--max-peers-per-key must be 0"):
        ServerConfig(data_dir=Path("x"), max_peers_per_key=-1).validate()


async def test_whip_peers_per_address_get_429_past_the_cap(tmp_path: Path) -> None:
    config = loopback_config(tmp_path / "data", http_port=0, builtin_avatars=("robot",), max_peers_per_key=2)
    server = FreeAvatarServer(config)
    await server.start()
    try:
        offer = await an_offer("video")
        base = f"http://127.0.0.1:{server.http_port}"
        headers = {"Content-Type": "application/sdp"}
        async with aiohttp.ClientSession() as http:
            locations = []
            for _ in range(2):
                async with http.post(f"{base}/whip?avatar=robot", data=offer, headers=headers) as response:
                    assert response.status == 201, await response.text()
                    locations.append(response.headers["Location"])
            async with http.post(f"{base}/whip?avatar=robot", data=offer, headers=headers) as response:
                text = await response.text()
                assert response.status == 429, text
                assert "address 127.0.0.1 already has 2 WebRTC peers open" in text and "--max-peers-per-key" in text
            async with http.delete(base + locations[0]) as response:
                assert response.status == 200
            async with http.post(f"{base}/whip?avatar=robot", data=offer, headers=headers) as response:
                assert response.status == 201, await response.text()
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            assert (await client.get_stats()).active_sessions == 2  # a refused POST left nothing
    finally:
        await server.stop(grace=0)
