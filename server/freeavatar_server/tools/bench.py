"""`freeavatar bench stream`: frame-in to rig-out latency (over gRPC and over WebRTC) and how
many actors x avatars one machine holds at 30 fps, against a real server process on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freeavatar import AsyncClient
from freeavatar._proto import stream_pb2
from freeavatar.stream import ActorFrame
from freeavatar_server.media import encode_jpeg
from freeavatar_server.tools.demo import DemoConfig, percentiles, render_clip
from freeavatar_server.tools.whip_client import PacedTrack, WebRtcPeer

BUILTIN = ("human_arkit", "cartoon", "robot", "cat")
SETTLE_US = 1_000_000
WEBRTC_SETTLE_US = 2_000_000  # also waits for the sender report that sets the capture clock
VP8_BITRATE = 1_500_000  # what a browser sends at 640x480


@dataclass(frozen=True)
class ActorRun:
    sent: int
    received: int  # rig frames, all avatars
    latencies_ms: np.ndarray


@dataclass(frozen=True)
class LoadResult:
    actors: int
    avatars: int
    fps: float
    delivered: float  # share of (frames sent x avatars) that came back as rig frames
    latency_ms: dict[str, float]
    mesh_rate_hz: float = 0.0  # face mesh runs per second per actor (the server slows it under load)
    # where an analysed frame's time went: each stage's mean ms per analysed frame (the mesh's
    # share of frames included); "handoff" is the wait for and trip to the worker
    stage_ms: dict[str, float] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        """Kept up: nearly every frame came back and latency did not grow into a backlog."""
        return self.delivered >= 0.95 and self.latency_ms.get("p99", 1e9) < 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`freeavatar serve --builtin-avatars` in a process of its own, as in production."""

    def __init__(self, data_dir: Path, workers: int = 2, serve_args: tuple[str, ...] = ()) -> None:
        self.port, self.http_port = free_port(), free_port()
        command = [
            sys.executable, "-c", "from freeavatar.cli import main; main()", "serve",
            "--data-dir", str(data_dir), "--port", str(self.port), "--builtin-avatars",
            "--http-port", str(self.http_port),
            "--pipeline-workers", str(workers), "--log-level", "WARNING", *serve_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, env=os.environ | {"OMP_NUM_THREADS": "1"})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def builtin_avatar_ids(client: AsyncClient) -> list[str]:
    """The built-in avatars' ids, once a just-started server is up and has registered them."""
    await client.wait_ready(60)
    for _ in range(100):  # the server registers the built-ins as it starts
        ids = [a.id for a in await client.list_avatars()]
        if len(ids) == len(BUILTIN):
            return ids
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the server registered {len(ids)} of the {len(BUILTIN)} built-in avatars")


async def drive_actor(client: AsyncClient, jpegs: list[bytes], avatar_ids: list[str], fps: float, seconds: float) -> ActorRun:
    n = int(seconds * fps)

    async def camera() -> AsyncIterator[ActorFrame]:
        started = time.monotonic()
        for index in range(n):
            await asyncio.sleep(max(0.0, started + index / fps - time.monotonic()))
            yield ActorFrame(jpegs[index % len(jpegs)], capture_time_us=time.time_ns() // 1000)

    latencies = []
    received = 0
    settled_from = time.time_ns() // 1000 + SETTLE_US
    async for frame in client.animate(camera(), avatar_ids=avatar_ids):
        received += 1
        if frame.capture_time_us >= settled_from:  # the first second also pays for call set-up
            latencies.append((time.time_ns() // 1000 - frame.capture_time_us) / 1000)
    return ActorRun(n, received, np.array(latencies))


async def run_load(address: str, jpegs: list[bytes], actors: int, avatar_ids: list[str], fps: float, seconds: float) -> LoadResult:
    async with AsyncClient(address) as client:
        before = await client.get_stats()
        runs = await asyncio.gather(
            *(drive_actor(client, actor_clip(jpegs, a, actors), avatar_ids, fps, seconds) for a in range(actors))
        )
        after = await client.get_stats()
    latencies = np.concatenate([r.latencies_ms for r in runs])
    sent = sum(r.sent for r in runs) * len(avatar_ids)
    meshes = stage_runs(after, stage_runs(before))["mesh"]
    return LoadResult(actors, len(avatar_ids), fps, sum(r.received for r in runs) / sent, percentiles(latencies),
                      round(meshes / (seconds * actors), 1), stage_means(before, after))


def actor_clip(jpegs: list[bytes], actor: int, actors: int) -> list[bytes]:
    """What one of `actors` actors sends: the whole clip there and back (a face moves on from
    where it was, as in front of a camera, and never jumps back to the start), from its own
    point in it, so that the actors do not send the same frame at the same time.

    (The ladder used to give actor a of n every n-th frame: a face that jumped n frames' worth
    at each frame, which lost the mesh's track on every run at 7 actors, so each mesh run paid
    for the detector and a second mesh: a load no camera makes.)"""
    loop = jpegs + jpegs[-2:0:-1]
    start = actor * len(loop) // max(actors, 1)
    return loop[start:] + loop[:start]


def stage_means(before: stream_pb2.PipelineStats, after: stream_pb2.PipelineStats) -> dict[str, float]:
    """Each stage's mean ms per frame analysed between two snapshots (every analysed frame is
    decoded, so the decode stage counts them)."""
    spent = {s.name: s.total_ms for s in after.stages}
    for s in before.stages:
        spent[s.name] -= s.total_ms
    frames = stage_runs(after, stage_runs(before)).get("decode", 0)
    return {name: round(ms / frames, 3) for name, ms in spent.items()} if frames else {}


def stage_runs(stats: stream_pb2.PipelineStats, since: dict[str, int] | None = None) -> dict[str, int]:
    """How many frames went through each stage (those counted in `since` taken off)."""
    since = since or {}
    return {s.name: s.processed - since.get(s.name, 0) for s in stats.stages}


async def find_capacity(run: Callable[[int], Awaitable[LoadResult]], max_actors: int) -> list[LoadResult]:
    """Loads of 1, 2, 4, ... actors until one is not held, then bisection between the last
    held and it: the largest number held, in a few runs. Sorted by actors."""
    tried: dict[int, LoadResult] = {}
    held, failed = 0, max_actors + 1
    actors = 1
    while actors >= 1 and actors not in tried:
        result = tried[actors] = await run(actors)
        if result.held:
            held = actors
        else:
            failed = actors
        actors = min(2 * held, max_actors) if failed > max_actors else (held + failed) // 2
    return [tried[n] for n in sorted(tried)]


def clip_frames(seconds: float = 2.0, fps: float = 30.0) -> np.ndarray:
    return render_clip(DemoConfig(seconds=seconds, fps=fps), lambda stage, done: None)


def encode_vp8(frames: np.ndarray, fps: float = 30.0) -> list[bytes]:
    """The clip as a real-time VP8 encoder sends it (aiortc's settings): one keyframe, then
    frames that each refer to the one before, so it loops from its keyframe."""
    import av

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    codec.bit_rate, codec.gop_size, codec.framerate = VP8_BITRATE, 10_000, round(fps)
    codec.options = {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0"}
    packets = []
    for index, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        packets.append(b"".join(bytes(p) for p in codec.encode(frame)))
    return packets


async def webrtc_latency(url: str, vp8: list[bytes], avatar_id: str, fps: float, seconds: float) -> dict[str, float]:
    """One actor sending pre-encoded VP8 over WHIP (as the gRPC run sends pre-encoded JPEGs),
    rig frames back over the data channel: capture to receipt, after the first two seconds."""
    import av

    peer = WebRtcPeer(url)
    track = PacedTrack([av.Packet(p) for p in vp8], fps, repeat=max(1, round(seconds * fps / len(vp8))))
    await peer.publish(f"/whip?avatar={avatar_id}", track, "VP8")
    latencies = []
    try:
        first = await peer.next_frame(30)
        settled_from = first.capture_time_us + WEBRTC_SETTLE_US
        while True:
            frame = await peer.next_frame(2.0)
            if frame.capture_time_us >= settled_from:
                latencies.append((time.time_ns() // 1000 - frame.capture_time_us) / 1000)
    except TimeoutError:  # the track has ended
        pass
    finally:
        await peer.close()
    peer.check()
    return percentiles(np.array(latencies))


async def bench_stream(
    seconds: float = 10.0, fps: float = 30.0, max_actors: int = 16, serve_args: tuple[str, ...] = ()
) -> dict[str, object]:
    """Latency (one actor, gRPC and WebRTC) and the capacity ladder against `freeavatar serve`
    (with `serve_args` added to its command line)."""
    frames = await asyncio.to_thread(clip_frames)
    jpegs = [encode_jpeg(f) for f in frames]
    vp8 = await asyncio.to_thread(encode_vp8, frames, fps)
    with tempfile.TemporaryDirectory() as data_dir:
        server = ServerProcess(Path(data_dir), serve_args=serve_args)
        try:
            address = f"127.0.0.1:{server.port}"
            async with AsyncClient(address) as client:
                ids = await builtin_avatar_ids(client)
                stats_before = await client.get_stats()
            single = await run_load(address, jpegs, 1, ids[:1], fps, seconds)
            webrtc = await webrtc_latency(f"http://127.0.0.1:{server.http_port}", vp8, ids[0], fps, seconds)
            ladder = await find_capacity(lambda n: run_load(address, jpegs, n, ids, fps, seconds), max_actors)
            async with AsyncClient(address) as client:
                stats = await client.get_stats()
        finally:
            server.stop()
    runs = stage_runs(stats, stage_runs(stats_before))
    held = [r for r in ladder if r.held]
    best = held[-1] if held else None
    return {
        "latency_ms": {"grpc": single.latency_ms, "webrtc": webrtc},
        "capacity": {"actors": best.actors if best else 0, "avatars": best.avatars if best else 0, "fps": fps},
        "ladder": [
            {"actors": r.actors, "avatars": r.avatars, "delivered": round(r.delivered, 4), "latency_ms": r.latency_ms,
             "mesh_rate_hz": r.mesh_rate_hz, "stage_ms": r.stage_ms}
            for r in ladder
        ],
        "stages_ms": {s.name: {"p50": round(s.p50_ms, 2), "p99": round(s.p99_ms, 2), "runs": runs[s.name],
                               "dropped": s.dropped} for s in stats.stages},
        "frames_in": stats.frames_in - stats_before.frames_in,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "serve_args": list(serve_args),
    }
