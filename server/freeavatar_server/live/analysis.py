"""The heavy half of the live pipeline, in worker processes: decode a frame, find and track
the face (MediaPipe's mesh and blendshapes: `inference.face.front`), read its head pose, encode
the expression, run every bound avatar's animator.

Python runs one thread at a time. With this work on a thread pool, the server used about 1.3
of two cores at 8 actors: the rest went to threads queueing for the GIL between ONNX Runtime
calls. Each `AnalysisWorker` is one process with its own models. An actor's stream is pinned
to one worker, because its face tracker (state carried from frame to frame) lives there. What
crosses the process boundary is the frame as the client sent it (a JPEG of ~15 kB; WebRTC
frames, which the server decodes itself, go as raw RGB) and, back, a face box, a head pose and
a few control vectors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
import zlib
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from freeavatar._proto import stream_pb2
from freeavatar_server.images import BadImage, decode_image
from freeavatar_server.inference.animator import AnimatorRuntime
from freeavatar_server.inference.encoder import OnnxEncoder
from freeavatar_server.inference.face.crop import crop_face
from freeavatar_server.inference.face.front import FaceFront, FrontTrack
from freeavatar_server.inference.face.pose import HeadPoseEstimator
from freeavatar_server.live.errors import Failed, Invalid, Unavailable

log = logging.getLogger(__name__)

MAX_FRAME_PIXELS = 4096 * 2160
CACHED_ANIMATORS = 32  # animator versions a worker keeps loaded (a few MB each)


class BadFrame(Invalid):
    """An actor frame the pipeline cannot read; the message says which and why."""


class FrameSkipped(Exception):
    """A frame with nothing to show this time (a video decoder waiting for its next keyframe):
    counted as a decode drop, and the stream goes on."""


class WorkerLost(Unavailable):
    """No worker could analyse this frame (they died on it, or the server is shutting down);
    the stream goes on with the next one."""


class AnalysisFailed(Failed):
    """The analysis itself failed (not the frame): a model that does not load or run. Carried
    back as text, so that whatever was raised in the worker crosses the process boundary."""


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
class AnalysisOptions:
    """How a worker analyses: its expression encoder, threads per model, and how often the face
    mesh runs per actor."""

    encoder_path: Path
    threads: int = 1
    # The mesh is most of a frame's cost (5 of 8 ms): at most this many runs per second per
    # actor; frames in between reuse the last reading (blendshapes, face box), and pose, the
    # encoder and the animators still run on each frame's own pixels. 0: every frame.
    face_rate_hz: float = 0.0
    # Under load the worker slows its actors' meshes down to this rate rather than drop whole
    # frames (MeshPace); at face_rate_hz (or 0) it never does.
    face_rate_floor_hz: float = 0.0


@dataclass
class MeshPace:
    """How much a worker slows its actors' face meshes while it is too busy to keep up.

    `busy` is the share of wall time the worker spent analysing, averaged over about the last
    second. Every half second the slowdown moves towards what would bring it to `target`
    (at most 25% a step, so that it settles rather than swings), between 1 (the configured
    rate) and `most` (the floor rate). The mesh is most of a frame's cost and its reading
    holds well between runs, so it is what gives way first: the frames themselves, their
    pose, embedding and animation still run at the camera's rate."""

    most: float = 1.0  # face_rate_hz / face_rate_floor_hz
    target: float = 0.7
    slowdown: float = 1.0
    busy: float = 0.0
    _window_s: float = 1.0
    _last_end: float | None = None
    _adjusted: float = 0.0

    def record(self, started: float, ended: float) -> None:
        """One frame's analysis ran from `started` to `ended` (time.perf_counter)."""
        previous = started if self._last_end is None else min(self._last_end, started)
        wall = max(ended - previous, 1e-6)  # the frame's work and the idle time before it
        self.busy += min(wall / self._window_s, 1.0) * (min((ended - started) / wall, 1.0) - self.busy)
        self._last_end = ended
        if self.most > 1.0 and ended - self._adjusted >= 0.5:
            self._adjusted = ended
            step = min(max(self.busy / self.target, 0.8), 1.25)
            self.slowdown = min(max(self.slowdown * step, 1.0), self.most)


@dataclass(frozen=True)
class AnimatorRef:
    """Which published animator drives an avatar, and the avatar's name inside that model."""

    path: str
    key: str


@dataclass(frozen=True)
class AnalysisRequest:
    stream: str  # one actor stream's key: its face tracker in the worker
    pixels: EncodedFrame | np.ndarray  # (H, W, 3) uint8 when the transport decodes (WebRTC)
    capture_time_us: int
    animators: dict[str, AnimatorRef]  # bound avatar id -> its animator


@dataclass(frozen=True)
class FaceFound:
    """Where the face was and how sure the front end is (the landmarks stay in the worker)."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 frame pixels
    confidence: float


@dataclass
class Analysis:
    """What the worker found in one frame."""

    face: FaceFound | None
    head_pose: np.ndarray | None  # (3,) yaw, pitch, roll degrees, before smoothing
    raw: dict[str, np.ndarray]  # avatar id -> animator output, before smoothing
    timings_ms: dict[str, float]
    worker_pid: int = 0
    blendshapes: np.ndarray | None = None  # (52,) ARKit order, from the real-face model


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

    def __init__(self, options: AnalysisOptions) -> None:
        cv2.setNumThreads(1)  # OpenCV's own pool would fight the other workers for the cores
        self.options = options
        self.encoder = OnnxEncoder(options.encoder_path, threads=options.threads)
        self.front = FaceFront(threads=options.threads)
        self.pose = HeadPoseEstimator(threads=options.threads)
        self.trackers: dict[str, FrontTrack] = {}  # by stream key
        floor, rate = options.face_rate_floor_hz, options.face_rate_hz
        self.pace = MeshPace(most=rate / floor if 0 < floor < rate else 1.0)
        self._animators: OrderedDict[str, AnimatorRuntime] = OrderedDict()  # by model path
        # ONNX Runtime optimises each graph on its first run: pay for that now, not on a frame
        self.encoder.embed_batch(np.zeros((1, self.encoder.size, self.encoder.size, 3), np.uint8))
        self.front.warm_up()
        self.pose.estimate(np.zeros((1, self.pose.size, self.pose.size, 3), np.uint8))

    def analyse(self, request: AnalysisRequest) -> Analysis:
        """BadFrame for a frame that cannot be read; AnalysisFailed for anything else."""
        try:
            return self._analyse(request)
        except BadFrame:
            raise
        except Exception as error:
            raise AnalysisFailed(f"{type(error).__name__}: {error}") from None

    def _analyse(self, request: AnalysisRequest) -> Analysis:
        started = time.perf_counter()
        try:
            return self._analyse_frame(request, started)
        finally:
            self.pace.record(started, time.perf_counter())

    def _analyse_frame(self, request: AnalysisRequest, started: float) -> Analysis:
        timings: dict[str, float] = {}
        pixels = request.pixels
        image = pixels if isinstance(pixels, np.ndarray) else decode_frame(pixels)
        timings["decode"], started = ms_since(started), time.perf_counter()
        tracker = self.trackers.get(request.stream)
        if tracker is None:
            rate = self.options.face_rate_hz
            interval = 1.0 / rate if rate > 0 else 0.0
            phase = zlib.crc32(request.stream.encode()) / 2**32  # spreads actors' mesh frames
            tracker = self.trackers[request.stream] = self.front.track(interval, phase)
        tracker.slowdown = self.pace.slowdown
        reused = tracker.reused
        face = tracker.update(image, request.capture_time_us / 1e6 or None)
        timings["detect" if tracker.reused > reused else "mesh"], started = ms_since(started), time.perf_counter()
        raw: dict[str, np.ndarray] = {}
        head_pose = None
        if face is not None:
            crop = crop_face(image, face.box, self.encoder.size)
            # the pose model takes the encoder's crop (both 96 px); cut its own if they differ
            pose_crop = crop if self.pose.size == self.encoder.size else crop_face(image, face.box, self.pose.size)
            pose_started = time.perf_counter()
            head_pose = self.pose.estimate(pose_crop[None])[0]
            timings["pose"] = ms_since(pose_started)
            embedding, units = self.encoder.read_batch(crop[None])  # units: None without a read-out
            timings["encode"] = ms_since(started) - timings["pose"]  # the crop and the encoder
            started = time.perf_counter()
            for avatar_id, ref in request.animators.items():
                raw[avatar_id] = self._animator(ref.path).predict(embedding, ref.key, face.blendshapes[None], units=units)[0]
            timings["animate"] = ms_since(started)
        found = FaceFound(face.box, face.confidence) if face is not None else None
        blendshapes = face.blendshapes if face is not None else None
        return Analysis(found, head_pose, raw, timings, os.getpid(), blendshapes)

    def forget(self, stream: str) -> None:
        self.trackers.pop(stream, None)

    def _animator(self, path: str) -> AnimatorRuntime:
        runtime = self._animators.get(path)
        if runtime is None:
            runtime = self._animators[path] = AnimatorRuntime.load(Path(path))
            while len(self._animators) > CACHED_ANIMATORS:
                self._animators.popitem(last=False)
        self._animators.move_to_end(path)
        return runtime


# A worker process's own Analyser, made by the pool's initializer: the one piece of
# process-wide state, because ProcessPoolExecutor calls plain functions.
_analyser: Analyser | None = None
_start_error: str | None = None  # why the models did not load, reported with every call


def _start_worker(options: AnalysisOptions) -> None:
    global _analyser, _start_error
    # The server's own signal handling shuts the pool down; a Ctrl-C or a SIGTERM to the
    # process group must not kill a worker mid-frame (or raise inside one).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A server killed without clean-up never tells its pool to stop (the worker holds both
    # ends of its call queue, so no EOF either): go when the parent goes.
    threading.Thread(target=_exit_with_parent, daemon=True, name="parent-watch").start()
    try:
        _analyser = Analyser(options)
    except Exception as error:  # an initializer that raises breaks the pool without a word
        _start_error = f"the analysis worker could not load its models: {type(error).__name__}: {error}"


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(0)


def _loaded() -> Analyser:
    if _analyser is None:
        raise AnalysisFailed(_start_error or "the analysis worker has no models")
    return _analyser


def _ready() -> int:
    _loaded()
    return os.getpid()


def _analyse(request: AnalysisRequest) -> Analysis:
    return _loaded().analyse(request)


def _forget(stream: str) -> None:
    if _analyser is not None:
        _analyser.forget(stream)


class AnalysisWorker:
    """One worker process (a one-process pool, so calls run in submission order), started on
    first use and replaced when it dies."""

    def __init__(self, options: AnalysisOptions) -> None:
        self._options = options
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self.streams: set[str] = set()
        self.pid: int | None = None  # the worker process, as last heard from
        self.restarts = 0

    async def start(self) -> None:
        """Start the process and wait until its models are loaded; AnalysisFailed if they do
        not load. Once it has answered, nothing: every animate call starts the pool, and a
        round trip would queue behind the frames of the streams already there (a worker that
        died since is replaced by its next call)."""
        if self.pid is None:
            self.pid = await self._call(_ready)

    async def analyse(self, request: AnalysisRequest) -> Analysis:
        """The analysis of one frame. BadFrame: the frame cannot be read; WorkerLost: workers
        died on it; AnalysisFailed: the analysis did not run."""
        analysis = await self._call(_analyse, request)
        self.pid = analysis.worker_pid
        return analysis

    def release(self, stream: str) -> None:
        """The stream ended: drop its face tracker (after any frame of it still in the worker)."""
        self.streams.discard(stream)
        if self._pool is not None:
            with contextlib.suppress(BrokenProcessPool, RuntimeError):  # dead or shut down
                self._pool.submit(_forget, stream)

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _call(self, fn, *args):
        # A pool learns of its process's death a moment after it happens, so a call may go to
        # a worker that died idle: such a call is retried once on a fresh worker. A second
        # death on the same call is the call's fault (a frame that crashes the decoder, say).
        for _ in range(2):
            pool = self._executor()
            try:
                # Shielded: a cancelled stream must not cancel a call queued in the pool (on
                # Python 3.11 a cancelled pending call can wedge a broken pool, gh-107219).
                return await asyncio.shield(asyncio.wrap_future(pool.submit(fn, *args)))
            except BrokenProcessPool:
                self._forget_dead(pool)
        raise WorkerLost("two analysis workers died in turn on this frame")

    def _executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise WorkerLost("the server is shutting down")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded server
                initializer=_start_worker,
                initargs=(self._options,),
            )
        return self._pool

    def _forget_dead(self, pool: ProcessPoolExecutor) -> None:
        """Let a dead pool go, once: two streams may both see one death, and the second must
        not shut down the replacement the first has already started."""
        if pool is self._pool:
            log.error("an analysis worker (pid %s) died; a new one takes its streams", self.pid)
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool, self.pid = None, None
            self.restarts += 1


class AnalysisPool:
    """The server's analysis workers; each stream goes to the one with the fewest streams."""

    def __init__(self, workers: int, options: AnalysisOptions) -> None:
        if workers < 1:
            raise ValueError(f"need at least one analysis worker, got {workers}")
        self.workers = [AnalysisWorker(options) for _ in range(workers)]

    async def start(self) -> None:
        """Start every worker (idempotent); returns once all have their models loaded."""
        await asyncio.gather(*(w.start() for w in self.workers))

    def assign(self, stream: str) -> AnalysisWorker:
        worker = min(self.workers, key=lambda w: len(w.streams))
        worker.streams.add(stream)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
