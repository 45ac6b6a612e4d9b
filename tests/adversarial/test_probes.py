"""The probes of the request-bounds review, as tests: each sends what a careless or hostile
client would, on loopback, and checks the status it gets, what it costs everyone else, and
what the server logs. Bounded in count and time; docs/reliability.md lists the results."""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import struct
import time
import zlib
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest

from freeavatar import AsyncClient, InvalidArgument, RigControl, RigSpec
from freeavatar._proto import avatar_pb2, avatar_pb2_grpc, rig_pb2, stream_pb2, stream_pb2_grpc
from freeavatar.wire import CHANNEL_OPTIONS
from freeavatar_server.app.config import ConfigError
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.images import BadImage, decode_image
from freeavatar_server.live.analysis import Analysis, FaceFound
from freeavatar_server.live.pipeline import ActorPipeline, PipelineStats, finite_values
from freeavatar_server.live.sessions import Binding, SessionRegistry
from freeavatar_server.transport.grpc.avatars import max_rig_vectors
from freeavatar_server.transport.limits import LIMITS, RateLimit
from tests.conftest import ServerThread, loopback_config
from tests.test_security import self_signed

STALL_BUDGET_S = 0.25


def wide_rig(controls: int = 1024, name: str = "wide", text: int = 0) -> RigSpec:
    """A rig with `controls` controls; `text` pads names and groups to that many characters."""
    return RigSpec(
        name[:128],
        tuple(
            RigControl(f"c{i}".ljust(text, "x"), group="g".ljust(text, "g"))
            for i in range(controls)
        ),
    )


def status_of(error: BaseException) -> grpc.StatusCode:
    assert isinstance(error, grpc.aio.AioRpcError), error
    return error.code()


@pytest.fixture
def thread_server(tmp_path: Path):
    running = ServerThread(loopback_config(tmp_path / "data"))
    yield running
    running.stop()


# 1. One call must not freeze every stream


async def test_a_full_sample_reply_stalls_no_other_call(thread_server: ServerThread) -> None:
    """The largest reply SampleRigVectors may build, on a 1,024-control avatar, while another
    client makes cheap calls: none of them waits more than 250 ms. The server runs in its own
    thread; the heavy reply is taken as bytes, so this loop measures the server, not a parse."""
    async with AsyncClient(thread_server.address) as client:
        heavy = await client.register_avatar(wide_rig())
        small = await client.register_avatar(RigSpec.arkit52())
        async with grpc.aio.insecure_channel(thread_server.address, options=CHANNEL_OPTIONS) as channel:
            sample = channel.unary_unary("/freeavatar.v1.AvatarService/SampleRigVectors")
            request = avatar_pb2.SampleRigVectorsRequest(
                avatar_id=heavy.id, count=max_rig_vectors(1024)
            ).SerializeToString()
            await client.get_avatar(small.id)  # connected and warm
            started = time.perf_counter()
            reply = asyncio.ensure_future(sample(request, timeout=60))
            latencies = []
            while not reply.done():
                sent = time.perf_counter()
                await client.get_avatar(small.id)
                latencies.append(time.perf_counter() - sent)
                await asyncio.sleep(0.01)
            heavy_s = time.perf_counter() - started
            body = await reply
    assert len(body) > 15 * 2**20  # it was the full reply
    worst = max(latencies)
    print(
        f"\nSampleRigVectors({max_rig_vectors(1024)} x 1024): {heavy_s * 1000:.0f} ms, "
        f"{len(body) / 2**20:.1f} MiB; concurrent GetAvatar x{len(latencies)}: "
        f"median {statistics.median(latencies) * 1000:.1f} ms, max {worst * 1000:.1f} ms"
    )
    assert len(latencies) >= 3
    assert worst < STALL_BUDGET_S


async def test_an_oversized_sample_count_is_refused_before_any_work(client: AsyncClient) -> None:
    avatar = await client.register_avatar(wide_rig())
    started = time.perf_counter()
    with pytest.raises(InvalidArgument, match=r"count must be in 1\.\.4068 for avatar 'wide' \(1024 controls"):
        await client.sample_rig_vectors(avatar.id, 100_000)
    assert time.perf_counter() - started < 1.0


async def test_the_sdk_receives_what_the_server_may_send(client: AsyncClient) -> None:
    """Over gRPC's 4 MiB receive default: the SDK's channels take the server's 16 MiB."""
    avatar = await client.register_avatar(RigSpec.arkit52("human_arkit"))
    vectors = await client.sample_rig_vectors(avatar.id, 20_000)
    assert vectors.shape == (20_000, 52) and np.isfinite(vectors).all()


# 2. One client must not break listing for everyone


async def test_an_oversized_group_is_refused(server: FreeAvatarServer, client: AsyncClient) -> None:
    spec = RigSpec.arkit52().to_proto()
    spec.controls[0].group = "g" * (9 * 2**20)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await avatar_pb2_grpc.AvatarServiceStub(channel).RegisterAvatar(
                avatar_pb2.RegisterAvatarRequest(spec=spec)
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.controls[0].group is 9437184 characters long; at most 128" in raised.value.details()
    assert await client.list_avatars() == []


async def test_pages_of_large_avatars_fit_any_client(server: FreeAvatarServer, client: AsyncClient) -> None:
    """24 avatars at the bounds (1,024 controls, 128-character names and groups): about 6 MB
    in all. The SDK lists them all; a client left at gRPC's 4 MiB default gets smaller pages."""
    for i in range(24):
        await client.register_avatar(wide_rig(name=f"big{i}", text=128))
    assert len(await client.list_avatars()) == 24
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as default_channel:
        stub = avatar_pb2_grpc.AvatarServiceStub(default_channel)
        token, seen, pages = "", 0, 0
        while True:
            page = await stub.ListAvatars(avatar_pb2.ListAvatarsRequest(page_token=token))
            assert page.ByteSize() <= LIMITS.reply_bytes
            seen, pages, token = seen + len(page.avatars), pages + 1, page.next_page_token
            if not token:
                break
    assert seen == 24 and pages > 1


async def test_sessions_are_listed_in_pages(tmp_path: Path) -> None:
    # more sessions than one caller may hold by default (the caps): the listing is what is probed
    server = FreeAvatarServer(loopback_config(tmp_path / "data", max_sessions_per_key=300))
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await _list_sessions_in_pages(server, client)
    finally:
        await server.stop(grace=0)


async def _list_sessions_in_pages(server: FreeAvatarServer, client: AsyncClient) -> None:
    made = [(await client.create_session(f"s{i}")).id for i in range(250)]
    assert [s.id for s in await client.list_sessions()] == made
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = stream_pb2_grpc.StreamServiceStub(channel)
        first = await stub.ListSessions(stream_pb2.ListSessionsRequest(page_size=100))
        assert len(first.sessions) == 100 and first.next_page_token
        await client.close_session(made[100])  # a session closed between pages is skipped
        second = await stub.ListSessions(
            stream_pb2.ListSessionsRequest(page_size=100, page_token=first.next_page_token)
        )
        assert [s.id for s in second.sessions] == made[101:201]
    with pytest.raises(InvalidArgument, match="name is 129 characters long; at most 128"):
        await client.create_session("n" * 129)


# 3. No NaN or inf reaches a rig frame


@pytest.mark.parametrize(
    "adjustment",
    [
        stream_pb2.ControlAdjustment(gain=math.nan),
        stream_pb2.ControlAdjustment(gain=1, offset=math.inf),
        stream_pb2.ControlAdjustment(gain=1, clamp_min=math.nan),
        stream_pb2.ControlAdjustment(gain=1, clamp_max=-math.inf),
    ],
    ids=["nan gain", "inf offset", "nan clamp_min", "-inf clamp_max"],
)
async def test_non_finite_adjustments_are_refused(
    server: FreeAvatarServer, client: AsyncClient, adjustment: stream_pb2.ControlAdjustment
) -> None:
    avatar = await client.register_avatar(RigSpec.arkit52())
    session = await client.create_session()
    binding = stream_pb2.AvatarBinding(avatar_id=avatar.id, adjustments={"jawOpen": adjustment})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stream_pb2_grpc.StreamServiceStub(channel).JoinSession(
                stream_pb2.JoinSessionRequest(session_id=session.id, bindings=[binding])
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "adjustments['jawOpen']" in raised.value.details()
    assert "is not a finite number" in raised.value.details()
    # and the live layer refuses them on its own (WebRTC and tests reach it without gRPC)
    with pytest.raises(ValueError, match="must be finite numbers"):
        Binding.resolve(binding, RigSpec.arkit52())


@pytest.mark.parametrize(
    "control, message",
    [
        (rig_pb2.RigControl(name="x", min=0, max=1e39), "max = 1e+39 does not fit a float32"),
        (rig_pb2.RigControl(name="x", min=-3e38, max=3e38), "wider than a float32 holds"),
    ],
)
async def test_rig_ranges_beyond_float32_are_refused(
    server: FreeAvatarServer, control: rig_pb2.RigControl, message: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await avatar_pb2_grpc.AvatarServiceStub(channel).RegisterAvatar(
                avatar_pb2.RegisterAvatarRequest(spec=rig_pb2.RigSpec(name="a", controls=[control]))
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()


async def test_the_widest_range_allowed_samples_finite_values(client: AsyncClient) -> None:
    avatar = await client.register_avatar(RigSpec("w", (RigControl("x", -1.7e38, 1.7e38),)))
    assert np.isfinite(await client.sample_rig_vectors(avatar.id, 100)).all()


class _Pool:
    def assign(self, key: str) -> _Pool:
        return self

    def release(self, key: str) -> None:
        pass


async def test_a_non_finite_reading_never_reaches_a_frame() -> None:
    """Where frames are built: a model's NaN or inf (and a NaN head pose) become the neutral
    value, and the next good reading is smoothed from there, not from the NaN."""
    spec = RigSpec.arkit52()
    sessions = SessionRegistry(require_tokens=False)
    session = sessions.create("probe")
    binding = Binding.resolve(stream_pb2.AvatarBinding(avatar_id="a"), spec)
    actor = session.join("actor", {"a": binding})
    published: list[rig_pb2.RigFrame] = []
    session.publish = lambda frames: published.extend(f for _, f in frames)  # type: ignore[method-assign]
    pipeline = ActorPipeline(session, actor, None, PipelineStats(), _Pool())  # type: ignore[arg-type]
    bad = np.full(52, np.nan, np.float32)
    bad[:3] = (np.inf, -np.inf, 0.5)
    readings = [bad, np.full(52, 0.25, np.float32)]
    for step, reading in enumerate(readings):
        frame = stream_pb2.ActorFrame(capture_time_us=(step + 1) * 33_000)
        analysis = Analysis(
            FaceFound((0, 0, 1, 1), math.nan), np.array([math.nan, 1, 2]), {"a": reading}, {}
        )
        pipeline._publish(frame, analysis, {"a": binding})
    assert len(published) == 2
    for frame in published:
        assert all(math.isfinite(v) for v in frame.values)
        assert all(math.isfinite(v) for v in (frame.head_pose.yaw, frame.head_pose.pitch, frame.confidence))
    # inf and -inf clamp to the control's range, NaN becomes its neutral value (0 here)
    assert list(published[0].values[:4]) == [1.0, 0.0, 0.5, 0.0]
    assert list(published[1].values) == [0.25] * 52  # smoothed from the good value, not NaN
    assert finite_values(np.array([np.nan], np.float32), np.array([np.inf], np.float32))[0] == 0.0


# 4. Client-caused errors are client errors, logged once


def _rejected(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "freeavatar_server.rejected"]


async def test_garbage_bytes_are_invalid_argument_with_bounded_logs(
    server: FreeAvatarServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        garbage = channel.unary_unary("/freeavatar.v1.AvatarService/GetAvatar")
        for _ in range(200):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await garbage(b"\xff\xff\xff\xff\x0f", timeout=5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid GetAvatarRequest (Wire format was corrupt)" in raised.value.details()
    assert len(_rejected(caplog)) <= LIMITS.log_burst
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]


async def test_garbage_without_a_key_is_refused_unparsed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k\n")
    running = FreeAvatarServer(loopback_config(tmp_path / "data", api_key_file=keys))
    await running.start()
    caplog.set_level(logging.INFO)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            garbage = channel.unary_unary("/freeavatar.v1.AvatarService/RegisterAvatar")
            for _ in range(200):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await garbage(b"\xff" * 64, timeout=5)
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await running.stop(grace=0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_rejection_log_is_rate_limited() -> None:
    now = [0.0]
    limit = RateLimit(burst=3, interval_s=10.0, clock=lambda: now[0])
    records = [logging.LogRecord("x", logging.WARNING, "", 0, "r %d", (i,), None) for i in range(10)]
    assert [limit.filter(r) for r in records[:5]] == [True, True, True, False, False]
    now[0] = 11.0
    assert limit.filter(records[5]) and records[5].getMessage() == "r 5 (2 more not logged)"


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header claims width x height (the pixels are never reached)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_a_bad_image() -> None:
    with pytest.raises(BadImage, match="image is too large"):
        decode_image(bomb_png())
    with pytest.raises(BadImage) as raised:
        decode_image(b"not an image at all")
    assert "0x" not in str(raised.value)  # Pillow's message names its buffer's address


async def test_a_decompression_bomb_in_animate_is_invalid_argument(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = FreeAvatarServer(loopback_config(tmp_path / "data", builtin_avatars=("robot",)))
    await running.start()
    caplog.set_level(logging.INFO)
    try:
        async with AsyncClient(f"127.0.0.1:{running.port}") as client:
            robot = (await client.list_avatars())[0]
            with pytest.raises(InvalidArgument, match="frame 1: image is too large"):
                async for _ in client.animate([bomb_png()], avatar_ids=[robot.id]):
                    pass
            summary = await client.upload_render_samples(robot.id, [((0.0,) * len(robot.spec.controls), bomb_png())])
            assert "image is too large" in summary.rejected[0][1]
    finally:
        await running.stop(grace=0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
async def http_server(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # DEBUG before start: the access log is on only when its logger would show it
    caplog.set_level(logging.DEBUG, logger="freeavatar_server.transport.webrtc.http")
    running = FreeAvatarServer(loopback_config(tmp_path / "data", http_port=0))
    await running.start()
    yield f"http://127.0.0.1:{running.http_port}"
    await running.stop(grace=0)


@pytest.mark.parametrize(
    "body, content_type, status",
    [
        (b"v=0\r\n\xff\xfe\xfd", "application/sdp", 400),
        (b"v=0\r\n" + b"a" * (65 * 1024), "application/sdp", 413),
        (b"{}", "application/json", 415),
    ],
    ids=["not utf-8", "too large", "not sdp"],
)
async def test_bad_offers_are_client_errors(
    http_server: str, caplog: pytest.LogCaptureFixture, body: bytes, content_type: str, status: int
) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(30):
            async with http.post(
                f"{http_server}/whep/sessions/s", data=body, headers={"Content-Type": content_type}
            ) as response:
                assert response.status == status, await response.text()
    assert 1 <= len(_rejected(caplog)) <= LIMITS.log_burst
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_long_query_values_are_400(http_server: str) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{http_server}/whip?avatar=a&name={'n' * 129}"
        async with http.post(url, data=b"v=0\r\n", headers={"Content-Type": "application/sdp"}) as response:
            assert response.status == 400
            assert "?name= is 129 characters long; at most 128" in await response.text()


# 9. Small ones


async def test_session_tokens_stay_out_of_the_access_log(
    http_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{http_server}/whep/sessions/s?token=sekrit-token", data=b"v=0\r\n",
            headers={"Content-Type": "application/sdp"},
        ) as response:
            assert response.status == 400  # "v=0" alone is no offer
    await asyncio.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records]
    assert any("POST /whep/sessions/s 400" in line for line in lines), lines
    assert not any("sekrit" in line for line in lines)


def test_a_swapped_tls_pair_is_named(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with pytest.raises(ConfigError, match="are not a certificate and its private key"):
        FreeAvatarServer(loopback_config(tmp_path / "data", tls_cert=key, tls_key=cert))
