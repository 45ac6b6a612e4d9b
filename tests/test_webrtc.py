"""WebRTC against a real server: aiortc peers on loopback send a synthetic actor clip through
WHIP and read rig frames from their data channel; subscribers, vanishing peers, bad offers."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiortc import RTCRtpSender
from aiortc.codecs import CODECS
from aiortc.rtp import RtpPacket

from freeavatar import AsyncClient
from freeavatar._proto import rig_pb2
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.live.pipeline import FrameSkipped, StageStats
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.tools.whip_client import PacedTrack, WebRtcPeer, WhipError
from freeavatar_server.transport.webrtc.video import (
    MAX_BACKLOG,
    FrameAssembler,
    IncomingVideo,
    SenderClock,
    VideoFrameRef,
    is_keyframe,
)
from tests.conftest import loopback_config

AVATARS = ("robot", "cartoon")


def synthetic_clip(frames: int = 30, width: int = 320, height: int = 240) -> list[np.ndarray]:
    """A synthetic actor's first `frames` at 30 fps (small: VP8 and H.264 encode it in real
    time here)."""
    import torch

    from freeavatar_server.synth.video import make_trajectory, render_trajectory_frames

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the painter is many small ops: threads only contend
    try:
        trajectory = make_trajectory(frames / 30, 30.0, seed=5, width=width, height=height)
        return list(render_trajectory_frames(trajectory, 0, trajectory.n_frames).images)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    return synthetic_clip()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[FreeAvatarServer]:
    config = loopback_config(tmp_path / "data", http_port=0, builtin_avatars=AVATARS, peer_timeout_s=1.5)
    server = FreeAvatarServer(config)
    await server.start()
    yield server
    await server.stop(grace=0)


def url(server: FreeAvatarServer) -> str:
    return f"http://127.0.0.1:{server.http_port}"


async def frames_until_quiet(peer: WebRtcPeer, quiet_s: float = 2.0) -> list[rig_pb2.RigFrame]:
    frames = []
    with pytest.raises(TimeoutError):
        while True:
            frames.append(await peer.next_frame(quiet_s))
    return frames


async def wait_for(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_clip_through_whip_rig_frames_back(live: FreeAvatarServer, clip, codec: str) -> None:
    peer = WebRtcPeer(url(live))
    answer = await peer.publish("/whip?avatar=robot&avatar=cartoon", PacedTrack(clip, 30.0, repeat=2), codec)
    candidates = [line for line in answer.splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(" 127.0.0.1 " in line for line in candidates)  # loopback only
    announced = [await asyncio.wait_for(peer.messages.get(), 15)]
    frames = await frames_until_quiet(peer)
    peer.check()
    async with AsyncClient(f"127.0.0.1:{live.port}") as client:
        ids = {a.name: a.id for a in await client.list_avatars()}
        stats = await client.get_stats()
    assert announced[0].HasField("controls")  # control names come before any frame
    assert stats.active_sessions == 1 and stats.active_actors == 1  # a private session, streaming
    for name in AVATARS:
        mine = [f for f in frames if f.avatar_id == ids[name]]
        spec = BUILTIN_AVATARS[name].spec
        assert len(mine) >= len(clip)  # of 60 frames sent (latest frame wins: some may drop)
        assert [f.sequence for f in mine] == sorted(f.sequence for f in mine)
        values = np.array([f.values for f in mine])
        assert values.shape[1] == len(spec.controls)
        assert (values >= np.array([c.min for c in spec.controls]) - 1e-5).all()
        assert (values <= np.array([c.max for c in spec.controls]) + 1e-5).all()
        assert np.mean([f.face_present for f in mine]) > 0.8
        capture = np.array([f.capture_time_us for f in mine])
        assert (np.diff(capture) > 0).all()  # one rig frame per source frame, in order
        # aiortc's sender reports stamp a frame when it is sent, after encoding: the capture
        # times estimated from them may run a little late, never far.
        assert all(-20_000 < f.emit_time_us - f.capture_time_us < 1_000_000 for f in mine)
    await peer.close()  # DELETE
    async with AsyncClient(f"127.0.0.1:{live.port}") as client:
        stats = await client.get_stats()
    assert stats.active_sessions == 0 and stats.active_actors == 0
    with pytest.raises(WhipError, match="HTTP 404: no WebRTC peer"):
        await peer.close()  # its resource is gone


async def test_whip_into_a_meeting_and_a_whep_subscriber(live: FreeAvatarServer, clip) -> None:
    async with AsyncClient(f"127.0.0.1:{live.port}") as client:
        ids = {a.name: a.id for a in await client.list_avatars()}
        session = await client.create_session("meeting")
        listener = WebRtcPeer(url(live))
        await listener.subscribe(f"/whep/sessions/{session.id}?avatar=robot")
        actor = WebRtcPeer(url(live))
        await actor.publish(f"/whip/sessions/{session.id}?avatar=cartoon,robot&name=ada", PacedTrack(clip, 30.0))
        heard = [await listener.next_frame(15) for _ in range(10)]
        ada = (await client.get_session(session.id)).actors
        assert [(a.name, a.streaming) for a in ada] == [("ada", True)]
        assert {f.avatar_id for f in heard} == {ids["robot"]}  # the subscriber asked for robot only
        assert {f.actor_id for f in heard} == {ada[0].id}
        status, text = await post(live, f"/whip/sessions/{session.id}/actors/{ada[0].id}", await an_offer("VP8"))
        assert status == 409 and "already streaming" in text  # one video per actor at a time
        own = await frames_until_quiet(actor)
        assert {f.avatar_id for f in own} == {ids["robot"], ids["cartoon"]}
        await actor.close()
        assert (await client.get_session(session.id)).actors == ()  # ada left with her peer
        await client.close_session(session.id)  # ends the subscriber's stream: the server ends its peer
        await wait_for(lambda: not live._http.webrtc.peers)
        with pytest.raises(WhipError, match="404"):
            await listener.close()


PUBLISH_AND_VANISH = """
import asyncio, sys
from tests.test_webrtc import synthetic_clip
from freeavatar_server.tools.whip_client import PacedTrack, WebRtcPeer
frames = synthetic_clip(10, 160, 120)
async def main():
    peer = WebRtcPeer(sys.argv[1])
    await peer.publish("/whip?avatar=robot", PacedTrack(frames, 30.0, repeat=100))
    await peer.next_frame(30)
    print("streaming", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_a_peer_that_vanishes_without_delete_is_cleaned_up(live: FreeAvatarServer) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISH_AND_VANISH, url(live), stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[1]
    )
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"streaming\n"
        (peer,) = live._http.webrtc.peers.values()
        assert peer.video is not None and peer.video.frames > 0
        process.send_signal(signal.SIGKILL)  # no DELETE, no DTLS close: just gone
        reason = await asyncio.wait_for(asyncio.shield(peer.closed), 10)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    assert reason == "nothing heard from the peer for 1.5 s"
    async with AsyncClient(f"127.0.0.1:{live.port}") as client:
        stats = await client.get_stats()
    assert stats.active_sessions == 0 and stats.active_actors == 0 and not live._http.webrtc.peers


async def post(server: FreeAvatarServer, path: str, body: str, content_type: str = "application/sdp", key: str = "") -> tuple[int, str]:
    headers = {"Content-Type": content_type} | ({"Authorization": f"Bearer {key}"} if key else {})
    async with aiohttp.ClientSession() as http, http.post(url(server) + path, data=body, headers=headers) as response:
        return response.status, await response.text()


async def an_offer(kind: str = "video") -> str:
    """A real aiortc offer: video (VP8 and H.264) and a data channel; "VP8": VP8 only; or
    "none": only a data channel."""
    peer = WebRtcPeer("http://unused")
    if kind != "none":
        transceiver = peer.pc.addTransceiver("video", direction="sendonly")
        if kind == "VP8":
            transceiver.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in ("video/VP8", "video/rtx")]
            )
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    sdp = peer.pc.localDescription.sdp
    await peer.pc.close()
    return sdp


async def test_bad_offers_get_a_clear_http_error(live: FreeAvatarServer, clip) -> None:
    video, channel_only = await an_offer("video"), await an_offer("none")
    vp9_only = (await an_offer("VP8")).replace("VP8/90000", "VP9/90000")
    cases = [
        ("/whip?avatar=robot", video, "text/plain", 415, "Content-Type: application/sdp (got 'text/plain')"),
        ("/whip?avatar=robot", "", "application/sdp", 400, "the request body is empty"),
        ("/whip?avatar=robot", "this is not sdp", "application/sdp", 400, "not valid SDP"),
        ("/whip?avatar=robot", vp9_only, "application/sdp", 400, "unsupported video codec: the offer has VP9"),
        ("/whip?avatar=robot", channel_only, "application/sdp", 400, "the offer sends no video"),
        ("/whip?avatar=ghost", video, "application/sdp", 404, "no avatar with id or name 'ghost'"),
        ("/whip", video, "application/sdp", 400, "name the avatars this actor drives: ?avatar="),
        ("/whip/sessions/nope?avatar=robot", video, "application/sdp", 404, "no session with id 'nope'"),
        ("/whep/sessions/nope", channel_only, "application/sdp", 404, "no session with id 'nope'"),
    ]
    for path, body, content_type, status, message in cases:
        got = await post(live, path, body, content_type)
        assert got[0] == status and message in got[1], (path, got)
    async with aiohttp.ClientSession() as http:
        async with http.delete(url(live) + "/peers/nope") as response:
            assert response.status == 404 and "no WebRTC peer 'nope'" in await response.text()
    assert not live._http.webrtc.peers
    async with AsyncClient(f"127.0.0.1:{live.port}") as client:
        stats = await client.get_stats()
        assert stats.active_sessions == 0 and stats.active_actors == 0  # nothing left half-made
    peer = WebRtcPeer(url(live))  # and the server carries on
    await peer.publish("/whip?avatar=robot", PacedTrack(clip[:10], 30.0))
    assert (await peer.next_frame(15)).values
    await peer.close()


async def test_keyed_servers_want_the_key_and_the_session_token(tmp_path: Path, clip) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k\n")
    server = FreeAvatarServer(loopback_config(tmp_path / "data", api_key_file=keys, http_port=0, builtin_avatars=("robot",)))
    await server.start()
    try:
        offer = await an_offer("video")
        status, text = await post(server, "/whip?avatar=robot", offer)
        assert status == 401 and "requires an API key" in text
        status, text = await post(server, "/whip?avatar=robot", offer, key="wrong")
        assert status == 401 and "not valid" in text
        async with AsyncClient(f"127.0.0.1:{server.port}", api_key="k") as client:
            session = await client.create_session()
        status, text = await post(server, f"/whip/sessions/{session.id}?avatar=robot&token=wrong", offer, key="k")
        assert status == 403 and "session token" in text
        async with aiohttp.ClientSession() as http, http.get(url(server) + "/") as response:
            assert response.status == 200 and "<title>FreeAvatar" in await response.text()  # the page is open
        peer = WebRtcPeer(url(server), api_key="k")
        await peer.publish(f"/whip/sessions/{session.id}?avatar=robot&token={session.token}", PacedTrack(clip[:10], 30.0))
        assert (await peer.next_frame(15)).values
        await peer.close()
    finally:
        await server.stop(grace=0)


# The video path on its own: real encoders' output through the assembler and decoder.


def rtp_frames(codec: str, images: list[np.ndarray], keyframes: tuple[int, ...] = (0,)) -> list[list[RtpPacket]]:
    """Each image encoded (aiortc's own encoders) and packetized as a sender would."""
    import av
    from aiortc.codecs import depayload, get_encoder

    parameters = next(c for c in CODECS["video"] if c.name == codec)
    encoder = get_encoder(parameters)
    frames, sequence = [], 1000
    for index, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = index * 3000, Fraction(1, 90_000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=index in keyframes)
        packets = []
        for i, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=parameters.payloadType, sequence_number=sequence, timestamp=timestamp)
            packet.payload, packet.marker = payload, int(i == len(payloads) - 1)
            packet._data = depayload(parameters, payload)  # as aiortc's receiver does
            packets.append(packet)
            sequence += 1
        frames.append(packets)
    return frames


def raise_it(error: BaseException) -> None:
    raise error


def incoming(codec: str = "VP8") -> tuple[IncomingVideo, list[VideoFrameRef], StageStats]:
    parameters = next(c for c in CODECS["video"] if c.name == codec)
    submitted: list[VideoFrameRef] = []
    drops = StageStats()
    return IncomingVideo({parameters.payloadType: parameters}, submitted.append, drops), submitted, drops


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_a_frame_is_released_on_its_last_packet(clip, codec: str) -> None:
    video, submitted, _ = incoming(codec)
    assembler = FrameAssembler(video, raise_it)
    first, second = rtp_frames(codec, clip[:2])
    assert len(first) > 1  # several packets, so the order matters
    for packet in [first[0], *reversed(first[1:])]:  # reordered on the way
        assert not submitted
        assembler.add(packet)
    assert len(submitted) == 1  # complete on its marker, before the next frame's first packet
    for packet in second:
        assembler.add(packet)
    assert len(submitted) == 2
    image = submitted[-1].decode()  # both frames decode; the newest comes out as RGB
    assert image.shape == clip[1].shape and np.abs(image.astype(int) - clip[1]).mean() < 12
    with pytest.raises(FrameSkipped):
        submitted[0].decode()  # already decoded on the way to the newer one


def test_a_reader_that_falls_behind_loses_frames_not_memory(clip) -> None:
    video, submitted, drops = incoming("VP8")
    frames = rtp_frames("VP8", (clip * 4)[:100], keyframes=(0, 90))
    assembler = FrameAssembler(video, raise_it)
    asked = []
    for packets in frames[:80]:  # nobody decodes: the pipeline is stuck
        for packet in packets:
            asked.append(assembler.add(packet)[0])
        assert video.waiting <= MAX_BACKLOG
    assert drops.dropped == MAX_BACKLOG + 1 + 19  # the backlog, the frame over it, then P frames
    assert any(asked)  # a picture loss indication went out for a keyframe to restart from
    for packets in frames[80:]:
        for packet in packets:
            assembler.add(packet)
    assert video.waiting == 10  # from the keyframe at 90 on
    assert submitted[-1].decode().shape == clip[0].shape
    assert video.waiting == 0


def test_capture_times_follow_the_senders_clock() -> None:
    from freeavatar_server.store import now_us

    clock = SenderClock()
    before = now_us()
    assert clock.capture_time_us(1234) >= before  # no sender report yet: our clock
    sent_us = now_us() - 5_000_000  # a sender 5 s behind us
    seconds, micros = divmod(sent_us, 1_000_000)
    clock.report(((seconds + 2_208_988_800) << 32) + (micros << 32) // 1_000_000, 2**32 - 45_000)
    assert clock.capture_time_us(2**32 - 45_000) == pytest.approx(sent_us, abs=2)
    assert clock.capture_time_us(45_000) == pytest.approx(sent_us + 1_000_000, abs=2)  # across the wrap
    clock.report(1 << 32, 0)  # a sender clock at 1900: not believed, the last report stands
    assert clock.capture_time_us(45_000) == pytest.approx(sent_us + 1_000_000, abs=2)
    # A later report stamped 30 ms late (the frame took that long to encode) moves nothing.
    late_us = sent_us + 2_000_000 + 30_000
    seconds, micros = divmod(late_us, 1_000_000)
    clock.report(((seconds + 2_208_988_800) << 32) + (micros << 32) // 1_000_000, 135_000)
    assert clock.capture_time_us(135_000) == pytest.approx(sent_us + 2_000_000, abs=2)


def test_keyframes_are_recognised(clip) -> None:
    for codec in ("VP8", "H264"):
        key, delta = rtp_frames(codec, clip[:2])
        assert is_keyframe(codec, b"".join(p._data for p in key))
        assert not is_keyframe(codec, b"".join(p._data for p in delta))


async def test_a_taken_http_port_is_a_clear_error(live: FreeAvatarServer, tmp_path: Path) -> None:
    from freeavatar_server.app.config import ConfigError

    taken = loopback_config(tmp_path / "other", http_port=live.http_port)
    with pytest.raises(ConfigError, match=f"cannot serve HTTP on 127.0.0.1:{live.http_port}"):
        await FreeAvatarServer(taken).start()
