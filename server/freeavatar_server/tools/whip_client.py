"""A WHIP / WHEP-like client on aiortc: sends a video track to the server and reads rig frames
from the "rig" data channel. The tests and `freeavatar bench stream` drive the server with it,
and it is the shortest way to do so from Python.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from fractions import Fraction

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from freeavatar._proto import rig_pb2
from freeavatar_server.transport.webrtc.ice import gather_on, peer_connection
from freeavatar_server.transport.webrtc.rig_channel import LABEL

VIDEO_CLOCK = 90_000


class WhipError(Exception):
    """The server refused an offer or a DELETE; `status` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class PacedTrack(MediaStreamTrack):
    """A video track playing `frames` (RGB arrays, or packets already encoded for the
    negotiated codec) at `fps`, `repeat` times over.

    aiortc's sender only logs a warning when a track's recv() raises, and the video silently
    stops; this keeps the error in `error` for the caller to raise (`WebRtcPeer.check`)."""

    kind = "video"

    def __init__(self, frames: Sequence[np.ndarray] | Sequence[av.Packet], fps: float = 30.0, repeat: int = 1) -> None:
        super().__init__()
        self._frames = frames
        self._fps = fps
        self._count = len(frames) * repeat
        self._index = 0
        self._started: float | None = None
        self.error: BaseException | None = None
        self.sent_at: list[float] = []  # wall-clock time each frame left this track

    async def recv(self) -> av.VideoFrame | av.Packet:
        try:
            return await self._next()
        except MediaStreamError:
            raise
        except BaseException as error:
            self.error = error
            raise

    async def _next(self) -> av.VideoFrame | av.Packet:
        if self._index >= self._count:
            self.stop()
            raise MediaStreamError
        if self._started is None:
            self._started = time.monotonic()
        await asyncio.sleep(max(0.0, self._started + self._index / self._fps - time.monotonic()))
        source = self._frames[self._index % len(self._frames)]
        if isinstance(source, np.ndarray):
            frame: av.VideoFrame | av.Packet = av.VideoFrame.from_ndarray(source, format="rgb24")
        else:
            frame = av.Packet(bytes(source))
        frame.pts = round(self._index * VIDEO_CLOCK / self._fps)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        self._index += 1
        self.sent_at.append(time.time())
        return frame


class WebRtcPeer:
    """One connection to the server: `publish` (WHIP) or `subscribe` (WHEP-like), then read
    `messages`, then `close` (DELETE)."""

    def __init__(self, base_url: str, api_key: str | None = None, hosts: tuple[str, ...] | None = ("127.0.0.1",)) -> None:
        self.base_url = base_url.rstrip("/")
        self.messages: asyncio.Queue[rig_pb2.RigStreamMessage] = asyncio.Queue()
        self.location: str | None = None
        self.track: PacedTrack | None = None
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._hosts = hosts
        self.pc = peer_connection()
        self.channel = self.pc.createDataChannel(LABEL)
        self.channel.on("message", self._received)

    async def publish(self, path: str, track: PacedTrack, codec: str = "VP8") -> str:
        """Send `track` to a WHIP endpoint (path and query, e.g. "/whip?avatar=robot")."""
        self.track = track
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        capabilities = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in (f"video/{codec.lower()}", "video/rtx")]
        transceiver.setCodecPreferences(capabilities)
        return await self.offer(path)

    async def subscribe(self, path: str) -> str:
        """Receive rig frames from a WHEP-like endpoint (e.g. "/whep/sessions/ID")."""
        return await self.offer(path)

    async def offer(self, path: str, sdp: str | None = None) -> str:
        """POST an offer (ours, or `sdp` as given); returns the answer."""
        if sdp is None:
            gather_on(self.pc, self._hosts)
            await self.pc.setLocalDescription(await self.pc.createOffer())
            sdp = self.pc.localDescription.sdp
        async with aiohttp.ClientSession() as http, http.post(
            self.base_url + path, data=sdp, headers=self._headers | {"Content-Type": "application/sdp"}
        ) as response:
            body = await response.text()
            if response.status != 201:
                raise WhipError(response.status, body)
            self.location = response.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        return body

    async def next_frame(self, timeout: float = 10.0) -> rig_pb2.RigFrame:
        """The next rig frame (control-name announcements are skipped)."""
        while True:
            message = await asyncio.wait_for(self.messages.get(), timeout)
            if message.HasField("frame"):
                return message.frame

    def check(self) -> None:
        """Raise what went wrong with the sent video, if anything."""
        if self.track is not None and self.track.error is not None:
            raise RuntimeError(f"the video track failed: {self.track.error!r}") from self.track.error

    async def close(self, delete: bool = True) -> None:
        """End the connection, and with `delete` its resource on the server (WhipError if
        the server refuses: a peer it had already ended is a 404)."""
        try:
            if delete and self.location is not None:
                url = self.base_url + self.location
                async with aiohttp.ClientSession() as http, http.delete(url, headers=self._headers) as response:
                    if response.status != 200:
                        raise WhipError(response.status, await response.text())
        finally:
            await self.pc.close()

    def _received(self, data: bytes | str) -> None:
        message = rig_pb2.RigStreamMessage()
        message.ParseFromString(data if isinstance(data, bytes) else data.encode())
        self.messages.put_nowait(message)

