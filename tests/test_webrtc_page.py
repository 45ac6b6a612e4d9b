"""The try-it page in headless Chromium: its fake camera plays a synthetic actor clip, the page
sends it over WHIP and draws the rig frames that come back. Driven over the DevTools protocol.

Needs Debian's chromium (.ci/run installs it); skipped without it, except in CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import av
import pytest

from freeavatar import AsyncClient
from freeavatar_server.app.server import FreeAvatarServer
from tests.conftest import loopback_config
from tests.test_webrtc import synthetic_clip

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="needs chromium (apt-get install chromium)"
)
FLAGS = (  # without the background-networking ones, this closed network refuses its connections
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
)  # fmt: skip


def write_y4m(path: Path, frames: list) -> None:
    """Chromium's fake camera reads .y4m (or .mjpeg) and loops it."""
    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


class DevTools:
    """Just enough of the Chrome DevTools protocol: evaluate an expression in the page."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._id = 0

    async def evaluate(self, expression: str) -> object:
        self._id += 1
        await self._socket.send_json(
            {"id": self._id, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": True}}
        )
        while True:
            reply = await self._socket.receive_json()
            if reply.get("id") == self._id:
                if "exceptionDetails" in reply["result"]:
                    raise RuntimeError(f"the page threw: {reply['result']['exceptionDetails']}")
                return reply["result"]["result"].get("value")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[tuple[FreeAvatarServer, DevTools]]:
    assert CHROMIUM is not None, "chromium is not installed: .ci/run installs Debian's package"
    write_y4m(tmp_path / "clip.y4m", synthetic_clip(30, 320, 240))
    server = FreeAvatarServer(loopback_config(tmp_path / "data", http_port=0, builtin_avatars=("robot", "cartoon")))
    await server.start()
    page = f"http://127.0.0.1:{server.http_port}/?avatar=robot,cartoon&start"
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--use-file-for-fake-video-capture={tmp_path / 'clip.y4m'}",
        f"--user-data-dir={tmp_path / 'profile'}", "--remote-debugging-port=0", page,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while not (match := re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", await process.stderr.readline())):
                pass
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{match[1].decode()}/json/list") as response:
                target = next(t for t in await response.json() if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                yield server, DevTools(socket)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        await server.stop(grace=0)


PAGE_STATE = """window.freeavatar === undefined ? null : JSON.stringify({
  state: freeavatar.state, error: freeavatar.error, frames: freeavatar.frames,
  latencyMs: freeavatar.latencyMs,
  avatars: Object.values(freeavatar.avatars).map((a) => a.avatar_name).sort(),
  bars: document.querySelectorAll(".bar").length,
  painted: [...document.querySelectorAll(".avatar canvas")].map((c) =>
    c.getContext("2d").getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 3 && v > 0).length),
})"""


async def test_the_page_sends_its_camera_and_draws_the_avatars(browser) -> None:
    server, devtools = browser
    async with asyncio.timeout(40):
        while True:
            loaded = await devtools.evaluate(PAGE_STATE)
            page = json.loads(loaded) if loaded else {"error": "", "frames": 0}
            assert not page["error"], page["error"]
            if page["frames"] >= 60:
                break
            await asyncio.sleep(0.25)
    assert page["state"] == "connected"
    assert page["avatars"] == ["cartoon", "robot"]
    assert page["bars"] == 14 + 8  # one per control of each avatar
    assert len(page["painted"]) == 2 and min(page["painted"]) > 1000  # both avatars drawn
    assert 0 < page["latencyMs"] < 2000  # capture (the browser's clock) to drawn
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        stats = await client.get_stats()
    assert stats.active_actors == 1 and stats.frames_out >= 60
    await devtools.evaluate("document.getElementById('stop').click()")  # DELETE, as the button does
    async with asyncio.timeout(10):
        while server._http.webrtc.peers:
            await asyncio.sleep(0.1)
