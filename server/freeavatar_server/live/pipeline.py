"""One actor's live pipeline: decode -> find the face -> estimate its head pose -> encode ->
animate every bound avatar -> calibrate, smooth, adjust -> publish rig frames to the session.

Latest frame wins: `submit` replaces a frame still waiting, so a slow stage drops stale frames
(counted) instead of queueing them. The heavy steps run in the actor's analysis worker process
(`analysis`); smoothing and publishing stay on the event loop, which owns the rest of the
actor's state.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from freeavatar._proto import rig_pb2, stream_pb2
from freeavatar_server.live.analysis import (
    MAX_FRAME_PIXELS,
    Analysis,
    AnalysisFailed,
    AnalysisRequest,
    BadFrame,
    EncodedFrame,
    FrameSkipped,
    WorkerLost,
    ms_since,
)
from freeavatar_server.live.models import LiveModels
from freeavatar_server.live.sessions import Actor, Binding, Session
from freeavatar_server.live.smoothing import NeutralCalibration, OneEuroFilter, ease_towards
from freeavatar_server.live.workers import AnalysisPool
from freeavatar_server.store import now_us

log = logging.getLogger(__name__)

__all__ = ["MAX_FRAME_PIXELS", "ActorPipeline", "BadFrame", "FrameSkipped", "PipelineStats", "StageStats"]

# "handoff": a frame's round trip to its analysis worker less the worker's own stages (the
# process hops, and the wait behind other actors' frames in that worker's queue).
# "mesh": a run of the face mesh (most run after their frame was answered, for the frames
# after it; a new or lost track's runs on its frame); "follow": the front end on a frame read
# with the last mesh, the face followed there by optical flow (so mesh runs / decodes is the
# share of frames the mesh ran on)
STAGES = ("decode", "mesh", "follow", "pose", "encode", "animate", "handoff", "publish")


class Decodable(Protocol):
    """A frame whose pixels another module decodes (a WebRTC video track's, whose decoder holds
    state): decoded on a thread of the server process, and only if the pipeline takes it."""

    @property
    def capture_time_us(self) -> int: ...

    def decode(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB; raises BadFrame or FrameSkipped."""
        ...


Frame = stream_pb2.ActorFrame | Decodable


@dataclass
class StageStats:
    timings_ms: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    processed: int = 0
    dropped: int = 0
    total_ms: float = 0.0

    def add(self, ms: float) -> None:
        self.timings_ms.append(ms)
        self.processed += 1
        self.total_ms += ms

    def to_proto(self, name: str) -> stream_pb2.StageStats:
        p50, p99 = np.percentile(self.timings_ms, [50, 99]) if self.timings_ms else (0.0, 0.0)
        return stream_pb2.StageStats(
            name=name, p50_ms=p50, p99_ms=p99, processed=self.processed, dropped=self.dropped, total_ms=self.total_ms
        )


@dataclass
class PipelineStats:
    """Server-wide: per-stage timings and drops, frames in and out."""

    stages: dict[str, StageStats] = field(default_factory=lambda: {s: StageStats() for s in STAGES})
    frames_in: int = 0
    frames_out: int = 0
    retired_subscriber_drops: int = 0  # drops of subscribers that have since gone


@dataclass
class AvatarTrack:
    """Per bound avatar: the post-processing state that makes frames smooth over time."""

    smoothing: OneEuroFilter
    calibration: NeutralCalibration
    values: np.ndarray
    sequence: int = 0


@dataclass
class HeadPoseTrack:
    """The actor's head pose (one per actor, shared by every avatar), smoothed like controls.

    The One Euro filter's `beta` is per unit of speed: pose moves in degrees where controls
    move in 0..1 ranges, so beta is 0.5 scaled down by 20 degrees (about one axis' range), with
    the speed smoothed at 1 Hz. Swept on two 6 s tracked clips (min cutoff 1-3 Hz, beta
    0.0125-0.1), this cuts the frame-to-frame jitter of the raw estimate about 4x and lags a
    natural head turn by less than its error: mean abs error 0.98 / 1.6 / 0.78 degrees
    smoothed, 0.75 / 1.47 / 0.69 raw.
    """

    smoothing: OneEuroFilter = field(
        default_factory=lambda: OneEuroFilter(beta=0.5 / 20, derivative_cutoff_hz=1.0)
    )
    degrees: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))

    def update(self, raw: np.ndarray | None, time_s: float, dt_s: float) -> rig_pb2.HeadPose:
        if raw is not None:
            self.degrees = self.smoothing(raw, time_s)
        else:  # no face: the head settles to facing the camera rather than freezing
            self.degrees = ease_towards(self.degrees, np.zeros(3, np.float32), dt_s)
            self.smoothing.reset()
        if not np.isfinite(self.degrees).all():  # see finite_values: never in a frame
            self.degrees = np.zeros(3, np.float32)
            self.smoothing.reset()
        yaw, pitch, roll = (float(v) for v in self.degrees)
        return rig_pb2.HeadPose(yaw=yaw, pitch=pitch, roll=roll)


class ActorPipeline:
    def __init__(
        self, session: Session, actor: Actor, models: LiveModels, stats: PipelineStats, analysis: AnalysisPool
    ) -> None:
        self.session = session
        self.actor = actor
        self._models = models
        self._stats = stats
        self._key = uuid.uuid4().hex  # this stream's face tracker in its worker
        self._worker = analysis.assign(self._key)
        self._tracks: dict[str, AvatarTrack] = {}
        self._head_pose = HeadPoseTrack()
        self._pending: Frame | None = None
        self._frame_index = 0
        self._pending_index = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_time_s = 0.0
        self.task: asyncio.Task[None] | None = None
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pipeline-{self.actor.id[:8]}")

    def cancel(self) -> None:
        """Stop processing; `task` finishes soon after (await it to be sure). Idempotent."""
        if self.task is not None:
            self.task.cancel()
        self._worker.release(self._key)

    async def stop(self) -> None:
        self.cancel()
        await asyncio.gather(*[t for t in (self.task,) if t is not None], return_exceptions=True)

    def submit(self, frame: Frame) -> None:
        """Take a frame; one that is still waiting becomes stale and is dropped."""
        self._frame_index += 1
        self._stats.frames_in += 1
        if self._pending is not None:
            self._stats.stages["decode"].dropped += 1
        self._pending, self._pending_index = frame, self._frame_index
        self._idle.clear()
        self._wake.set()

    def calibrate(self) -> None:
        for track in self._tracks.values():
            track.calibration.request()

    async def flush(self) -> None:
        """Wait until every submitted frame is processed or dropped."""
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            frame, index, self._pending = self._pending, self._pending_index, None
            if frame is None:
                self._idle.set()
                continue
            bindings = dict(self.actor.bindings)  # a rebind swaps in a new dict mid-stream
            try:
                analysis = await self._analyse(frame, bindings)
            except (BadFrame, AnalysisFailed) as error:
                if isinstance(error, AnalysisFailed):
                    log.error("actor %s: frame %d: %s", self.actor.id, index, error)
                self.failed.set_exception(type(error)(f"frame {index}: {error}"))
                self._idle.set()
                return
            except (FrameSkipped, WorkerLost):  # the stream goes on with the next frame
                self._stats.stages["decode"].dropped += 1
                if self._pending is None:
                    self._idle.set()
                continue
            self._publish(frame, analysis, bindings)
            if self._pending is None:
                self._idle.set()

    async def _analyse(self, frame: Frame, bindings: dict[str, Binding]) -> Analysis:
        decode_ms = 0.0
        if isinstance(frame, stream_pb2.ActorFrame):
            pixels: EncodedFrame | np.ndarray = EncodedFrame.of(frame)  # decoded by the worker
        else:  # the transport's own decoder holds state: it runs here, off the event loop
            started = time.perf_counter()
            pixels = await asyncio.to_thread(frame.decode)
            decode_ms = ms_since(started)
        animators = {
            avatar_id: ref
            for avatar_id, binding in bindings.items()
            if binding.wants_animator and (ref := self._models.animator_ref(avatar_id)) is not None
        }
        sent = time.perf_counter()
        analysis = await self._worker.analyse(AnalysisRequest(self._key, pixels, frame.capture_time_us, animators))
        analysis.timings_ms["handoff"] = max(0.0, ms_since(sent) - sum(analysis.timings_ms.values()))
        analysis.timings_ms["decode"] += decode_ms
        return analysis

    def _publish(self, frame: Frame, analysis: Analysis, bindings: dict[str, Binding]) -> None:
        started = time.perf_counter()
        time_s = frame.capture_time_us / 1e6 if frame.capture_time_us else time.monotonic()
        dt_s = time_s - self._last_time_s if self._last_time_s else 0.0
        self._last_time_s = time_s
        face = analysis.face
        head_pose = self._head_pose.update(analysis.head_pose, time_s, dt_s)
        published: list[tuple[Binding, rig_pb2.RigFrame]] = []
        for avatar_id, binding in bindings.items():
            track = self._tracks.get(avatar_id)
            if track is None:
                defaults = np.asarray(binding.spec.defaults, np.float32)
                track = self._tracks[avatar_id] = AvatarTrack(
                    OneEuroFilter(), NeutralCalibration(defaults), defaults.copy()
                )
            raw = binding.read(analysis.raw.get(avatar_id), analysis.blendshapes)
            if raw is not None:
                track.values = track.smoothing(track.calibration(raw), time_s)
            else:  # no face (or no model any more): settle to neutral rather than freeze
                track.values = ease_towards(track.values, track.calibration.defaults, dt_s)
                track.smoothing.reset()
            values = binding.adjust(track.values)
            if not np.isfinite(values).all():
                values = finite_values(values, binding.adjust(track.calibration.defaults))
                track.values = finite_values(track.values, track.calibration.defaults)
                track.smoothing.reset()  # its state holds the NaN: start again from here
            track.sequence += 1
            confidence = face.confidence if face is not None and raw is not None else 0.0
            rig_frame = rig_pb2.RigFrame(
                avatar_id=avatar_id,
                session_id=self.session.id,
                actor_id=self.actor.id,
                sequence=track.sequence,
                capture_time_us=frame.capture_time_us,
                emit_time_us=now_us(),
                values=values.tolist(),
                face_present=raw is not None,
                confidence=confidence if math.isfinite(confidence) else 0.0,
                head_pose=head_pose,
            )
            published.append((binding, rig_frame))
        self.session.publish(published)
        self._stats.frames_out += len(published)
        for stage, ms in [*analysis.timings_ms.items(), *analysis.after_ms.items()]:
            self._stats.stages[stage].add(ms)
        self._stats.stages["publish"].add(ms_since(started))


def finite_values(values: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """`values` with every NaN or inf replaced by the control's neutral value.

    Rig frames are built in one place (`ActorPipeline._publish`) and every transport (gRPC,
    WebRTC, Live Link, VMC) sends what it built, so this is where no non-finite value may pass:
    requests are checked (`transport.limits`), but a model or a filter can still produce one,
    and an engine fed a NaN breaks its avatar's mesh.
    """
    finite = np.isfinite(values)
    if finite.all():
        return values
    fallback = np.nan_to_num(neutral, nan=0.0, posinf=0.0, neginf=0.0)  # a guarantee, not a hope
    return np.where(finite, values, fallback).astype(np.float32)
