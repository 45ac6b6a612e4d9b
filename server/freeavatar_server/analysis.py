"""The heavy half of the live pipeline, in worker processes: decode a frame, find and track
the face, read its head pose, encode the expression, run every bound avatar's animator.

Python runs one thread at a time. With this work on a thread pool, the server used about 1.3
of two cores at 8 actors: the rest went to threads queueing for the GIL between ONNX Runtime
calls. Each `AnalysisWorker` is one process with its own models. An actor is pinned to one
worker for its whole stream, because its face tracker (state carried from frame to frame)
lives there. What crosses the process boundary is small: the encoded frame in; a face box, a
head pose and a few control vectors out.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from freeavatar._proto import stream_pb2
from freeavatar_server.images import BadImage, decode_image

if TYPE_CHECKING:
    from freeavatar_server.animator.runtime import AnimatorRuntime
    from freeavatar_server.face import FaceObservation

log = logging.getLogger(__name__)

MAX_FRAME_PIXELS = 4096 * 2160
CACHED_ANIMATORS = 8  # published animator versions a worker keeps loaded


class BadFrame(ValueError):
    """An actor frame the pipeline cannot read; the message says which and why."""


class FrameSkipped(Exception):
    """A frame with nothing to show this time (a video decoder waiting for its next keyframe):
    counted as a decode drop, and the stream goes on."""


class WorkerLost(Exception):
    """The worker process analysing a frame died; a fresh one takes the next frame."""


@dataclass(frozen=True)
class EncodedFrame:
    """An actor frame's pixels as the client sent them (bytes pickle as one copy)."""

    format: int  # stream_pb2.ImageFormat
    data: bytes
    width: int = 0  # RGB24 only
    height: int = 0

    @classmethod
    def of(cls, frame: stream_pb2.ActorFrame) -> EncodedFrame:
        return cls(frame.format, frame.data, frame.width, frame.height)


@dataclass(frozen=True)
class AnimatorRef:
    """Which published animator drives an avatar, and the avatar's name inside that model."""

    path: str
    key: str


@dataclass(frozen=True)
class AnalysisRequest:
    actor_id: str
    pixels: EncodedFrame | np.ndarray  # (H, W, 3) uint8 when the transport decodes (WebRTC)
    capture_time_us: int
    animators: dict[str, AnimatorRef]  # bound avatar id -> its animator


@dataclass
class Analysis:
    """What the worker found in one frame."""

    face: FaceObservation | None
    head_pose: np.ndarray | None  # (3,) yaw, pitch, roll degrees, before smoothing
    raw: dict[str, np.ndarray]  # avatar id -> animator output, before smoothing
    timings_ms: dict[str, float]


def decode_frame(frame: EncodedFrame | stream_pb2.ActorFrame) -> np.ndarray:
    """An actor frame -> (H, W, 3) uint8 RGB, or BadFrame naming the problem."""
    if frame.format == stream_pb2.IMAGE_FORMAT_RGB24:
        width, height = frame.width, frame.height
        if not width or not height or width * height > MAX_FRAME_PIXELS:
            raise BadFrame(f"RGB24 frame needs width and height (got {width}x{height})")
        if len(frame.data) != width * height * 3:
            raise BadFrame(f"RGB24 frame of {width}x{height} needs {width * height * 3} bytes, got {len(frame.data)}")
        return np.frombuffer(frame.data, np.uint8).reshape(height, width, 3)
    if frame.format not in (stream_pb2.IMAGE_FORMAT_JPEG, stream_pb2.IMAGE_FORMAT_PNG):
        raise BadFrame("frame format must be JPEG, PNG or RGB24")
    try:
        return decode_image(frame.data)
    except BadImage as error:
        raise BadFrame(str(error)) from None


class Analyser:
    """One process's models, and the face trackers of the actors pinned to it."""

    def __init__(self, encoder_path: Path, threads: int = 1) -> None:
        import cv2

        from freeavatar_server.encoder.export import OnnxEncoder
        from freeavatar_server.face import FaceLocaliser, HeadPoseEstimator

        cv2.setNumThreads(1)  # OpenCV's own pool would fight the other workers for the cores
        self.encoder = OnnxEncoder(encoder_path, threads=threads)
        self.localiser = FaceLocaliser(threads=threads)
        self.pose = HeadPoseEstimator(threads=threads)
        self.trackers: dict[str, object] = {}  # actor id -> FaceTracker
        self._animators: OrderedDict[str, AnimatorRuntime] = OrderedDict()  # by model path
        # ONNX Runtime optimises each graph on its first run: pay for that now, not on a frame
        self.encoder.embed_batch(np.zeros((1, self.encoder.size, self.encoder.size, 3), np.uint8))
        self.localiser.detect(np.zeros((480, 640, 3), np.uint8))
        self.pose.estimate(np.zeros((1, self.pose.size, self.pose.size, 3), np.uint8))

    def analyse(self, request: AnalysisRequest) -> Analysis:
        from freeavatar_server.face import FaceTracker, crop_face

        timings: dict[str, float] = {}
        started = time.perf_counter()
        pixels = request.pixels
        image = pixels if isinstance(pixels, np.ndarray) else decode_frame(pixels)
        timings["decode"], started = _ms_since(started), time.perf_counter()
        tracker = self.trackers.get(request.actor_id)
        if tracker is None:
            tracker = self.trackers[request.actor_id] = FaceTracker(self.localiser)
        face = tracker.update(image, request.capture_time_us / 1e6 or None)
        timings["detect"], started = _ms_since(started), time.perf_counter()
        raw: dict[str, np.ndarray] = {}
        head_pose = None
        if face is not None:
            crop = crop_face(image, face.box, self.encoder.size)
            # the pose model takes the encoder's crop (both 96 px); cut its own if they differ
            pose_crop = crop if self.pose.size == self.encoder.size else crop_face(image, face.box, self.pose.size)
            pose_started = time.perf_counter()
            head_pose = self.pose.estimate(pose_crop[None])[0]
            timings["pose"] = _ms_since(pose_started)
            embedding = self.encoder.embed_batch(crop[None])
            timings["encode"] = _ms_since(started) - timings["pose"]  # the crop and the encoder
            started = time.perf_counter()
            for avatar_id, ref in request.animators.items():
                raw[avatar_id] = self._animator(ref.path).predict(embedding, ref.key)[0]
            timings["animate"] = _ms_since(started)
        return Analysis(face, head_pose, raw, timings)

    def forget(self, actor_id: str) -> None:
        self.trackers.pop(actor_id, None)

    def _animator(self, path: str) -> AnimatorRuntime:
        runtime = self._animators.get(path)
        if runtime is None:
            from freeavatar_server.animator.runtime import AnimatorRuntime

            runtime = self._animators[path] = AnimatorRuntime.load(Path(path))
            while len(self._animators) > CACHED_ANIMATORS:
                self._animators.popitem(last=False)
        self._animators.move_to_end(path)
        return runtime


# A worker process's own Analyser, made by the pool's initializer: the one piece of
# process-wide state, because ProcessPoolExecutor calls plain functions.
_analyser: Analyser | None = None


def _start_worker(encoder_path: Path, threads: int) -> None:
    global _analyser
    # A server killed without clean-up never tells its pool to stop (the worker holds both
    # ends of its call queue, so no EOF either): go when the parent goes.
    threading.Thread(target=_exit_with_parent, daemon=True, name="parent-watch").start()
    _analyser = Analyser(encoder_path, threads)


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(0)


def _ready() -> bool:
    return _analyser is not None


def _analyse(request: AnalysisRequest) -> Analysis:
    assert _analyser is not None
    return _analyser.analyse(request)


def _forget(actor_id: str) -> None:
    if _analyser is not None:
        _analyser.forget(actor_id)


class AnalysisWorker:
    """One worker process (a one-process pool, so calls run in submission order), started on
    first use and restarted if it dies."""

    def __init__(self, encoder_path: Path, threads: int = 1) -> None:
        self._encoder_path = encoder_path
        self._threads = threads
        self._pool: ProcessPoolExecutor | None = None
        self.actors: set[str] = set()

    @property
    def pid(self) -> int | None:
        """The worker process's id once it runs (for tests and operators)."""
        processes = list(getattr(self._pool, "_processes", None) or {})
        return processes[0] if processes else None

    async def start(self) -> None:
        """Start the process and wait until its models are loaded."""
        await asyncio.get_running_loop().run_in_executor(self._executor(), _ready)

    async def analyse(self, request: AnalysisRequest) -> Analysis:
        """The analysis of one frame; BadFrame for a frame that cannot be read, WorkerLost if
        the process died on it."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), _analyse, request)
        except BrokenProcessPool as error:
            log.error("an analysis worker died (%s); starting a new one", error)
            self._close_pool()
            raise WorkerLost("the analysis worker died on this frame") from None

    def release(self, actor_id: str) -> None:
        """The actor's stream ended: drop its face tracker."""
        self.actors.discard(actor_id)
        if self._pool is not None:
            try:
                self._pool.submit(_forget, actor_id)
            except (BrokenProcessPool, RuntimeError):  # dead or shut down: nothing to forget
                pass

    def close(self) -> None:
        self._close_pool()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded server
                initializer=_start_worker,
                initargs=(self._encoder_path, self._threads),
            )
        return self._pool

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class AnalysisPool:
    """The server's analysis workers; each actor goes to the one with the fewest actors."""

    def __init__(self, workers: int, encoder_path: Path, threads: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"need at least one analysis worker, got {workers}")
        self.workers = [AnalysisWorker(encoder_path, threads) for _ in range(workers)]

    async def start(self) -> None:
        """Start every worker (idempotent); returns once all have their models loaded."""
        await asyncio.gather(*(w.start() for w in self.workers))

    def assign(self, actor_id: str) -> AnalysisWorker:
        worker = min(self.workers, key=lambda w: len(w.actors))
        worker.actors.add(actor_id)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
