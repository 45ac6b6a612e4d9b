"""`freeavatar demo`: a server in-process, an actor clip (a synthetic actor, or your own video
with `--video`) streamed through it to the built-in avatars, and a side-by-side video of what
came back (actor | each avatar rendered by its reference renderer from the rig frames
received, and six moments of it as demo.png), with the latency it measured."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from freeavatar import AsyncClient
from freeavatar.stream import ActorFrame, RigFrame
from freeavatar_server.app.config import ServerConfig
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.images import encode_png
from freeavatar_server.media import VideoWriter, encode_jpeg, read_video

Progress = Callable[[str, float], None]  # (stage, fraction done)
WARM_UP_US = 1_000_000
MAX_ROWS = 480  # a file's frames are scaled down to this height
STRIP_FRAMES = 6  # rows of the demo's picture (demo.png)


def percentiles(values: np.ndarray) -> dict[str, float]:
    """Latency summary in ms: p50, p90, p99, mean, max."""
    if not len(values):
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    summary = {"p50": p50, "p90": p90, "p99": p99, "mean": values.mean(), "max": values.max()}
    return {name: round(float(value), 2) for name, value in summary.items()}



@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path = Path("demo")
    seconds: float = 10.0
    fps: float = 30.0
    avatars: tuple[str, ...] = ("human_arkit", "cartoon", "robot", "cat")
    seed: int = 3
    panel: int = 240  # pixel height of each panel in the output video
    video: Path | None = None  # the actor's clip from a file (its first `seconds`) instead


@dataclass
class DemoResult:
    video: str
    frames_sent: int
    frames_received: dict[str, int]
    latency_ms: dict[str, float]  # capture -> rig frame received, after the first second
    first_frame_ms: float  # the first frame's, which includes setting the call up
    faces_found: float  # share of rig frames with face_present
    config: dict[str, object] = field(default_factory=dict)


async def run_demo(config: DemoConfig, progress: Progress = lambda stage, done: None) -> DemoResult:
    frames, fps = await asyncio.to_thread(actor_clip, config, progress)
    config = replace(config, fps=fps)
    jpegs = [encode_jpeg(frame) for frame in frames]
    data_dir = config.out_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    server = FreeAvatarServer(ServerConfig(data_dir=data_dir, port=0, builtin_avatars=config.avatars))
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            ids = {a.name: a.id for a in await client.list_avatars()}
            captures, received = await stream_clip(
                client, jpegs, [ids[n] for n in config.avatars], config.fps, progress
            )
    finally:
        await server.stop(grace=0)
    by_avatar = {name: [r for r in received if r.frame.avatar_id == ids[name]] for name in config.avatars}
    video = config.out_dir / "demo.mp4"
    await asyncio.to_thread(write_side_by_side, video, frames, captures, by_avatar, config, progress)
    # The first frames also pay for the call's set-up (binding, model warm-up): reported apart.
    settled = [r for r in received if r.frame.capture_time_us >= captures[0] + WARM_UP_US]
    latencies = np.array([(r.received_us - r.frame.capture_time_us) / 1000 for r in settled])
    result = DemoResult(
        video=str(video),
        frames_sent=len(frames),
        frames_received={name: len(fs) for name, fs in by_avatar.items()},
        latency_ms=percentiles(latencies),
        first_frame_ms=(received[0].received_us - captures[0]) / 1000 if received else 0.0,
        faces_found=float(np.mean([f.frame.face_present for f in received])) if received else 0.0,
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    )
    (config.out_dir / "demo.json").write_text(json.dumps(asdict(result), indent=2))
    return result


def actor_clip(config: DemoConfig, progress: Progress) -> tuple[np.ndarray, float]:
    """The actor's clip, (T, H, W, 3) uint8, and its frame rate: the video file's (scaled to at
    most 480 rows, as a webcam sends), or the synthetic actor's."""
    if config.video is None:
        return render_clip(config, progress), config.fps
    frames, fps = read_video(config.video, config.seconds)
    height, width = frames[0].shape[:2]
    if height > MAX_ROWS:
        width, height = (width * MAX_ROWS // height) // 2 * 2, MAX_ROWS
        frames = [_resize_to(f, width, height) for f in frames]
    progress("read actor video", 1.0)
    return np.stack(frames), fps


def render_clip(config: DemoConfig, progress: Progress) -> np.ndarray:
    """The synthetic actor's clip: (T, 480, 640, 3) uint8."""
    import torch

    from freeavatar_server.synth.video import (  # lazy: torch
        make_trajectory,
        render_trajectory_frames,
    )

    torch.set_num_threads(1)  # the painter is many small ops: threads only contend
    trajectory = make_trajectory(config.seconds, config.fps, seed=config.seed)
    chunks = []
    for start in range(0, trajectory.n_frames, 8):
        stop = min(start + 8, trajectory.n_frames)
        chunks.append(render_trajectory_frames(trajectory, start, stop).images)
        progress("render actor clip", stop / trajectory.n_frames)
    return np.concatenate(chunks)


@dataclass(frozen=True)
class Received:
    frame: RigFrame
    received_us: int


async def stream_clip(
    client: AsyncClient, jpegs: list[bytes], avatar_ids: list[str], fps: float, progress: Progress
) -> tuple[list[int], list[Received]]:
    """Send the clip at its frame rate, as a camera would; returns the capture time of every
    frame sent and every rig frame received."""
    captures: list[int] = []

    async def camera() -> AsyncIterator[ActorFrame]:
        started = time.monotonic()
        for index, jpeg in enumerate(jpegs):
            await asyncio.sleep(max(0.0, started + index / fps - time.monotonic()))
            progress("stream through the server", (index + 1) / len(jpegs))
            captures.append(time.time_ns() // 1000)
            yield ActorFrame(jpeg, capture_time_us=captures[-1])

    received = []
    async for frame in client.animate(camera(), avatar_ids=avatar_ids):
        received.append(Received(frame, time.time_ns() // 1000))
    return captures, received


def write_side_by_side(
    path: Path,
    frames: np.ndarray,
    captures: list[int],
    by_avatar: dict[str, list[Received]],
    config: DemoConfig,
    progress: Progress,
) -> None:
    from freeavatar_server.synth.avatars import BUILTIN_AVATARS  # lazy: torch, to render

    panel = config.panel
    height, width = frames.shape[1:3]
    actor_width = (width * panel // height) // 2 * 2
    panels = []
    for name, received in by_avatar.items():
        avatar = BUILTIN_AVATARS[name]
        rigs = rigs_per_source_frame(received, captures, avatar.neutral(1)[0])
        panels.append(np.concatenate([avatar.render(rigs[i : i + 32], panel) for i in range(0, len(rigs), 32)]))
        progress("render avatars", len(panels) / len(by_avatar))
    # the picture beside the video: six moments, past the first half second of settling in
    strip_at = set(np.linspace(min(len(frames) - 1, round(config.fps / 2)), len(frames) - 1, STRIP_FRAMES).round().astype(int))
    strip = []
    with VideoWriter(path, config.fps, actor_width + panel * len(panels), panel) as video:
        for index, frame in enumerate(frames):
            actor = np.asarray(_resize_to(frame, actor_width, panel))
            row = np.concatenate([actor, *(p[index] for p in panels)], axis=1)
            video.write(row)
            if index in strip_at:
                strip.append(row)
    path.with_suffix(".png").write_bytes(encode_png(np.concatenate(strip)))


def rigs_per_source_frame(received: list[Received], captures: list[int], neutral: np.ndarray) -> np.ndarray:
    """The rig shown with each source frame: the one made from it, or else the last one before
    it (a frame the pipeline dropped as stale keeps the previous rig, as an engine would)."""
    made = {r.frame.capture_time_us: r.frame.values for r in received}
    rigs = np.empty((len(captures), len(neutral)), np.float32)
    current = neutral
    for index, capture in enumerate(captures):
        current = made.get(capture, current)
        rigs[index] = current
    return rigs


def _resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
