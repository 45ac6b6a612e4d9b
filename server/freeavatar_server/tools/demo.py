"""`freeavatar demo`: a server in-process, an actor clip (a synthetic actor, or your own video
with `--video`) streamed through it to the built-in avatars, and a side-by-side video of what
came back (actor | each avatar rendered by its reference renderer from the rig frames
received, and six moments of it as demo.png), with the latency it measured.

A synthetic actor's expression is known frame by frame, so the picture shows the moments a
newcomer looks for (the actor at rest, smiling, with the mouth open, blinking, raising and
lowering the brows), chosen from what the actor did, never from what the avatars did, beside a
close-up of the actor's face; a video file's picture shows evenly spaced moments."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from freeavatar import AsyncClient
from freeavatar.stream import ActorFrame, RigFrame
from freeavatar_server.app.config import ServerConfig
from freeavatar_server.app.server import FreeAvatarServer
from freeavatar_server.images import encode_png
from freeavatar_server.inference.face.crop import cut_window
from freeavatar_server.media import VideoWriter, encode_jpeg, read_video

if TYPE_CHECKING:
    from freeavatar_server.synth.video import Trajectory

Progress = Callable[[str, float], None]  # (stage, fraction done)
WARM_UP_US = 1_000_000
MAX_ROWS = 480  # a file's frames are scaled down to this height
STRIP_FRAMES = 6  # rows of the demo's picture (demo.png)
# The moments the picture looks for in a synthetic actor's clip: the action units each shows
# (their mean), and how strong the peak must be to count as that moment.
MOMENTS: dict[str, tuple[str, ...]] = {
    "smile": ("lip_corner_pull_L", "lip_corner_pull_R"),
    "mouth open": ("jaw_drop",),
    "blink": ("blink_L", "blink_R"),
    "brows raised": ("brow_inner_raise", "brow_outer_raise_L", "brow_outer_raise_R"),
    "frown": ("brow_lower",),
}
CLEAR_MOMENT = 0.3
CLOSE_UP = 1.3  # the actor's close-up: this many face widths around the face


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
    trajectory = actor_trajectory(config) if config.video is None else None
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
    await asyncio.to_thread(write_side_by_side, video, frames, captures, by_avatar, config, trajectory, progress)
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


def actor_trajectory(config: DemoConfig) -> Trajectory:
    """What the synthetic actor does, frame by frame (its expression, pose and face box)."""
    from freeavatar_server.synth.video import make_trajectory  # lazy: torch

    return make_trajectory(config.seconds, config.fps, seed=config.seed)


def render_clip(config: DemoConfig, progress: Progress) -> np.ndarray:
    """The synthetic actor's clip: (T, 480, 640, 3) uint8."""
    import torch

    from freeavatar_server.synth.video import render_trajectory_frames  # lazy: torch

    torch.set_num_threads(1)  # the painter is many small ops: threads only contend
    trajectory = actor_trajectory(config)
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
    trajectory: Trajectory | None,
    progress: Progress,
) -> None:
    """The video (actor | the actor's close-up, when the face box is known | each avatar) and
    beside it the picture: STRIP_FRAMES of its rows, each labelled with its moment."""
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
    moments = strip_moments(trajectory, len(frames), config.fps)
    strip = []
    row_width = actor_width + panel * (len(panels) + (trajectory is not None))
    with VideoWriter(path, config.fps, row_width, panel) as video:
        for index, frame in enumerate(frames):
            actor = [np.asarray(_resize_to(frame, actor_width, panel))]
            if trajectory is not None:
                actor.append(close_up(frame, trajectory.face_boxes[index], panel))
            row = np.concatenate([*actor, *(p[index] for p in panels)], axis=1)
            video.write(row)
            if index in moments:
                strip.append(_labelled(row, f"{index / config.fps:.1f} s  {moments[index]}"))
    path.with_suffix(".png").write_bytes(encode_png(np.concatenate(strip)))


def strip_moments(trajectory: Trajectory | None, n_frames: int, fps: float) -> dict[int, str]:
    """The picture's STRIP_FRAMES rows, {frame index: what it shows}, past the first half second
    of settling in. From a synthetic actor: the frame each of MOMENTS peaks at (when it peaks
    clearly) and the calmest frame, each at least a third of a second from the others; the rows
    left, and every row of a video file's picture, evenly spaced."""
    settle = min(n_frames - 1, round(fps / 2))
    chosen: dict[int, str] = {}
    apart = max(1, round(fps / 3))
    free = np.zeros(n_frames, bool)
    free[settle:] = True

    def take(index: int, what: str) -> None:
        chosen[index] = what
        free[max(0, index - apart) : index + apart + 1] = False

    if trajectory is not None:
        from freeavatar_server.synth.actors import AU_INDEX  # lazy: torch

        expression = trajectory.expressions[:n_frames]
        calm = expression.sum(1)
        if free.any():
            take(int(np.where(free, -calm, -np.inf).argmax()), "at rest")
        for what, units in MOMENTS.items():
            strength = expression[:, [AU_INDEX[u] for u in units]].mean(1)
            if (strength[free] >= CLEAR_MOMENT).any() and len(chosen) < STRIP_FRAMES:
                take(int(np.where(free, strength, -np.inf).argmax()), what)
    for index in np.linspace(settle, n_frames - 1, STRIP_FRAMES).round().astype(int):
        if len(chosen) < STRIP_FRAMES and (free[index] or trajectory is None):
            take(int(index), "")
    return dict(sorted(chosen.items()))


def close_up(frame: np.ndarray, face_box: np.ndarray, size: int) -> np.ndarray:
    """A square of CLOSE_UP face widths around the face, (size, size, 3); the frame's edge
    pads it where the square runs off the frame."""
    x0, y0, x1, y1 = face_box
    half = CLOSE_UP * (x1 - x0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cut_window(frame, np.array([cx - half, cy - half, cx + half, cy + half]), size)


def _labelled(row: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(row)
    font = ImageFont.load_default(size=max(12, row.shape[0] // 14))
    ImageDraw.Draw(image).text((6, 4), text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(image)


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
