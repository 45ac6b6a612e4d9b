"""Reading and writing video files (actor clips, demo output) and JPEG frames, through PyAV
and Pillow."""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np


def video_codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class VideoWriter:
    """RGB frames -> an mp4 (H.264 when this PyAV has it). Use as a context manager."""

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        import av

        if width % 2 or height % 2:
            raise ValueError("width and height must be even for yuv420p video")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream(video_codec(), rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"

    def write(self, image: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class VideoError(ValueError):
    """A video file that cannot be read; the message names the file and why."""


def iter_video(path: Path) -> Iterator[np.ndarray]:
    """A video file's frames one at a time as (H, W, 3) uint8 RGB, for clips too long to hold
    whole; VideoError naming the file when it cannot be read."""
    import av

    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                yield frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, IndexError, OSError) as error:
        raise VideoError(f"cannot read video {path}: {error}") from None


def video_rate(path: Path) -> float:
    """A video file's frame rate (30 when it does not say)."""
    import av

    try:
        with av.open(str(path)) as container:
            return float(container.streams.video[0].average_rate or 30)
    except (av.error.FFmpegError, IndexError, OSError) as error:
        raise VideoError(f"cannot read video {path}: {error}") from None


def read_video(path: Path, max_seconds: float | None = None) -> tuple[list[np.ndarray], float]:
    """A video file's frames as (H, W, 3) uint8 RGB, and its frame rate (the first
    `max_seconds` only, when given)."""
    rate = video_rate(path)
    frames: list[np.ndarray] = []
    for frame in iter_video(path):
        if max_seconds is not None and len(frames) >= max_seconds * rate:
            break
        frames.append(frame)
    if not frames:
        raise VideoError(f"video {path} has no frames")
    return frames, rate
