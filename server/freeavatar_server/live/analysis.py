"""The heavy half of the live pipeline, as it runs in an analysis worker process
(`live.workers`): decode a frame, find and track the face (MediaPipe's mesh and blendshapes:
`inference.face.front`), read its head pose, encode the expression, run every bound avatar's
animator.

    analyser = Analyser(AnalysisOptions(encoder_path))
    results = analyser.analyse_batch(requests)     # one frame per actor: a tick's worth
    analysis = analyser.analyse(request)           # one frame (evaluation, tests)

A batch finds each actor's face on its own (its tracker carries state from frame to frame),
then runs pose, the encoder and each animator once for all the faces found. A frame read with
an earlier frame's mesh gets that mesh's blendshapes carried forward by the encoder's change
since (`inference.face.carry`), so that a blink between two meshes still shows; then the emotion
guard scales the smile and the lowered brows by the last mesh's emotion reading
(`inference.face.emotion`) and the blinks are read as how far the lids are shut
(`inference.face.blink`); each mesh's jawOpen was raised to what it shows of the lips
(`inference.face.jaw`) before the carry starts from it. The units the animators read have
their lip corners raised to that smile where the encoder reads less (`SmileLift`), then are
guarded the same way.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from freeavatar._proto import stream_pb2
from freeavatar_server.images import BadImage, decode_image
from freeavatar_server.inference.animator import AnimatorRuntime
from freeavatar_server.inference.encoder import OnnxEncoder
from freeavatar_server.inference.face.blink import BlinkCurve
from freeavatar_server.inference.face.carry import SMILE_BLENDSHAPES, BlendshapeCarry, SmileLift
from freeavatar_server.inference.face.crop import crop_face
from freeavatar_server.inference.face.emotion import UnitGuard, guard_blendshapes
from freeavatar_server.inference.face.front import FaceFront, FaceObservation, FrontTrack
from freeavatar_server.inference.face.jaw import JawLift
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
    # actor; on frames in between optical flow follows the face box and the encoder carries the
    # last blendshapes, and pose, the encoder and the animators still run on each frame's own
    # pixels (but see expression_floor). 0: every frame.
    face_rate_hz: float = 0.0
    # Under load the worker slows its actors' meshes down to this rate rather than drop whole
    # frames (LoadPace); at face_rate_hz (or 0) it never does.
    face_rate_floor_hz: float = 0.0
    # Once the meshes are at their floor (at once, with no floor below face_rate_hz), the least
    # share of each actor's frames whose expression is still read before the worker drops whole
    # frames (LoadPace): the others reuse the last frame's embedding, units, blendshapes and
    # animators' controls; head pose is read on every frame. 1: every frame's, always. (With
    # face_rate_hz 0 every frame has a mesh of its own, so every frame's is read.)
    expression_floor: float = 1.0
    # A real-face emotion classifier reads the face with each mesh and guards the smile and
    # lowered-brow blendshapes (inference.face.emotion), and the animators' units likewise; off,
    # the smile and brows are MediaPipe's own and the animators' lip corners follow its smile unguarded.
    emotion_guard: bool = True
    # MediaPipe's blinks as served read as how far the lids are shut (inference.face.blink):
    # real open eyes read 0.1-0.4 there. None: MediaPipe's own.
    blink_curve: BlinkCurve | None = BlinkCurve()
    # Each mesh's jawOpen raised to the line of its inner-lip gap, as far as MediaPipe reads no
    # smile, where MediaPipe reads less (inference.face.jaw): it reads a plainly open mouth as
    # nearly shut. None: its own.
    jaw_lift: JawLift | None = JawLift()

    def __post_init__(self) -> None:
        if not 0 < self.expression_floor <= 1:
            raise ValueError(f"expression_floor is a share of frames in (0, 1], got {self.expression_floor}")


@dataclass
class LoadPace:
    """How much a worker slows its actors' face meshes, and then their expression readings,
    while it is too busy to keep up.

    `busy` is the share of wall time the worker spent working, `mesh_busy` the share of it spent
    on face meshes and `expression_busy` on expression readings (crops, encoder, carry, guard,
    animators), each measured over a period of `every_s` and smoothed over the last few (a
    period holds only a few meshes at a low rate). At the end of each period the mesh's
    slowdown is set to what would bring `busy` to `target` with the rest of the work as it is
    (the meshes' share scales as 1 / slowdown), moving at most 4x up or 0.8x down a period,
    between 1 (the configured rate) and `most` (the floor rate). A worker that waits on the
    server between ticks is never idle enough to look saturated, so this aims at the meshes'
    share directly rather than stepping by the busy share. The mesh is most of a frame's cost,
    and between runs optical flow follows the face and the encoder carries its blendshapes, so
    it is what gives way first.

    Once the meshes are at their floor, the expression readings give way the same way: an
    actor's frame then reuses its last frame's reading (embedding, units, animators' controls)
    on all but one in `expression_slowdown` frames, up to `expression_most`; its head pose is
    still read on every frame. They come back first when the load falls, and the meshes speed
    up only once every frame's expression is read again. (Both stages read the same smoothed
    busy share, so near the boundary the expressions may overshoot for a few periods before
    they settle.) With no mesh floor below the configured rate (`most` 1), the expressions are
    the first to give way."""

    most: float = 1.0  # face_rate_hz / face_rate_floor_hz
    expression_most: float = 1.0  # 1 / the least share of frames whose expression is read
    target: float = 0.7
    every_s: float = 0.5
    smoothing: float = 0.5  # weight of the newest period in the busy shares
    slowdown: float = 1.0  # the meshes'
    expression_slowdown: float = 1.0
    busy: float = 0.0
    mesh_busy: float = 0.0
    expression_busy: float = 0.0
    _period_start: float | None = None
    _work_s: float = 0.0
    _mesh_s: float = 0.0
    _expression_s: float = 0.0
    _periods: int = 0

    def record(self, started: float, ended: float, mesh_s: float = 0.0, expression_s: float = 0.0) -> None:
        """Work ran from `started` to `ended` (time.perf_counter), `mesh_s` seconds of it face
        meshes and `expression_s` expression readings."""
        if self._period_start is None:
            self._period_start = started
        self._work_s += ended - started
        self._mesh_s += mesh_s
        self._expression_s += expression_s
        elapsed = ended - self._period_start
        if elapsed < self.every_s:
            return
        weight = self.smoothing if self._periods else 1.0
        self.busy += weight * (min(self._work_s / elapsed, 1.0) - self.busy)
        self.mesh_busy += weight * (min(self._mesh_s / elapsed, 1.0) - self.mesh_busy)
        self.expression_busy += weight * (min(self._expression_s / elapsed, 1.0) - self.expression_busy)
        self._period_start, self._work_s, self._mesh_s, self._expression_s = ended, 0.0, 0.0, 0.0
        self._periods += 1
        # what the meshes were during the period just measured: the expressions give way only
        # after a whole period with the meshes at their floor
        meshes_at_floor = self.slowdown >= self.most
        if self.most > 1.0:
            step = self._step(self.slowdown, self.mesh_busy, self.most)
            if self.expression_slowdown > 1.0:
                step = max(step, 1.0)  # held at the floor until every expression is read again
            self.slowdown = min(max(self.slowdown * step, 1.0), self.most)
        if self.expression_most > 1.0:
            step = self._step(self.expression_slowdown, self.expression_busy, self.expression_most) if meshes_at_floor else 0.8
            self.expression_slowdown = min(max(self.expression_slowdown * step, 1.0), self.expression_most)

    def _step(self, slowdown: float, share: float, most: float) -> float:
        """The factor that moves a stage's slowdown towards what brings `busy` to `target`,
        the rest of the work as it is (the stage's share scales as 1 / slowdown)."""
        room = self.target - (self.busy - share)  # what the stage may take
        wanted = slowdown * share / room if room > 0 else most
        return min(max(wanted / slowdown, 0.8), 4.0)


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
    # (52,) ARKit order, from the real-face model: its mesh of this frame, or the last mesh's
    # carried forward by the encoder (inference.face.carry; on a frame that reuses the last
    # expression reading, as the last frame's); as served: the mesh's jawOpen lifted, the
    # smile and lowered brows guarded, the blinks curved (AnalysisOptions)
    blendshapes: np.ndarray | None = None
    # stage -> ms of this stream's work done since its last frame outside any frame's round
    # trip (meshes run after their frames were answered)
    after_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class ExpressionMemo:
    """A stream's last expression reading, which its frames reuse while the worker is too busy
    to read every frame's (LoadPace.expression_slowdown)."""

    embedding: np.ndarray  # (16,)
    units: np.ndarray | None  # (25,) the encoder's action-unit read-out, if it has one
    credit: float = 0.0  # frames' worth of readings owed: the next is read when it reaches 1
    controls: dict[tuple[str, AnimatorRef], np.ndarray] = field(default_factory=dict)  # by (avatar id, animator)


@dataclass
class FrameFace:
    """One frame inside the worker, between finding its face and reading it."""

    image: np.ndarray
    face: FaceObservation | None
    timings: dict[str, float]
    mesh_ms: float = 0.0  # the stream's meshes run since its last frame, after their answers
    meshed: bool = False  # its face reading is its own mesh's (not the last one's)
    head_pose: np.ndarray | None = None
    raw: dict[str, np.ndarray] = field(default_factory=dict)

    def analysis(self) -> Analysis:
        face = self.face
        found = FaceFound(face.box, face.confidence) if face is not None else None
        blendshapes = face.blendshapes if face is not None else None
        after = {"mesh": self.mesh_ms} if self.mesh_ms else {}
        return Analysis(found, self.head_pose, self.raw, self.timings, os.getpid(), blendshapes, after)


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
        self.front = FaceFront(threads=options.threads, emotions=options.emotion_guard, jaw_lift=options.jaw_lift)
        self.pose = HeadPoseEstimator(threads=options.threads)
        self.trackers: dict[str, FrontTrack] = {}  # by stream key
        # frames whose mesh is due, run after their answers went back (refresh_meshes), and
        # what that took, told with each stream's next frame
        self._mesh_due: dict[str, tuple[np.ndarray, float | None]] = {}
        self._mesh_ms: dict[str, float] = {}
        # Blendshapes between meshes (inference.face.carry): per stream, the last mesh's
        # blendshapes and its frame's units; and the units of frames whose mesh is due
        self.carry = BlendshapeCarry.for_encoder(options.encoder_path)
        # the animators' lip corners raised to MediaPipe's smile (fitted and kept with the carry),
        # guard or no guard; its own attribute, so a caller may drop the carry and keep the lift
        self.smile_lift: SmileLift | None = None if self.carry is None else self.carry.smile_lift
        # the emotion guard on the units the animators read (the blendshapes are guarded below)
        self.unit_guard = UnitGuard.for_encoder(options.encoder_path) if options.emotion_guard else None
        self._carried_from: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._units_due: dict[str, np.ndarray] = {}
        floor, rate = options.face_rate_floor_hz, options.face_rate_hz
        self.pace = LoadPace(most=rate / floor if 0 < floor < rate else 1.0, expression_most=1.0 / options.expression_floor)
        self._expressions: dict[str, ExpressionMemo] = {}  # by stream key
        self._animators: OrderedDict[str, AnimatorRuntime] = OrderedDict()  # by model path
        # ONNX Runtime optimises each graph on its first run: pay for that now, not on a frame
        self.encoder.embed_batch(np.zeros((1, self.encoder.size, self.encoder.size, 3), np.uint8))
        self.front.warm_up()
        self.pose.estimate(np.zeros((1, self.pose.size, self.pose.size, 3), np.uint8))

    def analyse(self, request: AnalysisRequest) -> Analysis:
        """One frame's analysis, its mesh (when due) run on it first. BadFrame for a frame that
        cannot be read; AnalysisFailed for anything else."""
        result = self.analyse_batch([request], mesh_after=False)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def analyse_batch(
        self, requests: list[AnalysisRequest], mesh_after: bool = True
    ) -> list[Analysis | BadFrame | AnalysisFailed]:
        """A tick's frames, one per actor: each frame's analysis, or the error of that frame
        alone. Every actor's face is found on its own; pose, the encoder and each animator then
        run once for all the faces found (ONNX Runtime is cheaper per face in a batch, and
        Python's per-call overhead is paid once). With `mesh_after`, a frame whose mesh is due
        is read with the stream's last mesh, and its own runs in `refresh_meshes`, after the
        answer; without, before."""
        started = time.perf_counter()
        found: list[FrameFace | BadFrame | AnalysisFailed] = []
        try:
            found = [self._find_face(request, mesh_after) for request in requests]
            faces = [(i, f) for i, f in enumerate(found) if isinstance(f, FrameFace) and f.face is not None]
            if faces:
                try:
                    self._read_faces([requests[i] for i, _ in faces], [f for _, f in faces])
                except Exception as error:
                    failed = AnalysisFailed(f"{type(error).__name__}: {error}")
                    for i, _ in faces:
                        found[i] = failed
            return [f if isinstance(f, Exception) else f.analysis() for f in found]
        finally:
            timings = [f.timings for f in found if isinstance(f, FrameFace)]
            meshes_ms = sum(t.get("mesh", 0.0) for t in timings)
            expressions_ms = sum(t.get("encode", 0.0) + t.get("animate", 0.0) for t in timings)
            self.pace.record(started, time.perf_counter(), meshes_ms / 1000, expressions_ms / 1000)

    @property
    def meshes_due(self) -> bool:
        """Frames of this worker's last tick wait for their meshes (refresh_meshes)."""
        return bool(self._mesh_due)

    def _find_face(self, request: AnalysisRequest, mesh_after: bool) -> FrameFace | BadFrame | AnalysisFailed:
        """Decode one frame and find its face (the front end's track of that actor)."""
        try:
            started = time.perf_counter()
            pixels = request.pixels
            image = pixels if isinstance(pixels, np.ndarray) else decode_frame(pixels)
            timings = {"decode": ms_since(started)}
            started = time.perf_counter()
            tracker = self._tracker(request.stream)
            tracker.slowdown = self.pace.slowdown
            time_s = request.capture_time_us / 1e6 or None
            meshed = not tracker.tracking  # a new or lost track meshes this frame in read()
            face, due = tracker.read(image, time_s)
            if due and not mesh_after:
                face, meshed = tracker.refresh(image, time_s), True
            elif due:
                self._mesh_due[request.stream] = (image, time_s)
            timings["mesh" if meshed else "follow"] = ms_since(started)
            return FrameFace(image, face, timings, self._mesh_ms.pop(request.stream, 0.0), meshed)
        except BadFrame as error:
            return error
        except Exception as error:
            return AnalysisFailed(f"{type(error).__name__}: {error}")

    def _read_faces(self, requests: list[AnalysisRequest], frames: list[FrameFace]) -> None:
        """Head pose, embedding and every bound animator's controls for each found face, each
        model run once for them all; each frame is charged its share of a batch's time. A frame
        the pace leaves unread (LoadPace.expression_slowdown) reuses its stream's last reading
        and still gets its own head pose."""
        memos = [self._expression_memo(r.stream, f) for r, f in zip(requests, frames, strict=True)]
        fresh = [i for i, memo in enumerate(memos) if memo is None]
        started = time.perf_counter()
        # the pose model takes the encoder's crop when they read the same size; else its own
        shared = self.pose.size == self.encoder.size
        crops = {i: crop_face(frames[i].image, frames[i].face.box, self.encoder.size) for i in (range(len(frames)) if shared else fresh)}
        pose_crops = np.stack([crops[i] if shared else crop_face(f.image, f.face.box, self.pose.size) for i, f in enumerate(frames)])
        crop_ms = ms_since(started)
        started = time.perf_counter()
        poses = self.pose.estimate(pose_crops)
        pose_ms, started = ms_since(started), time.perf_counter()
        if fresh:
            embeddings, units = self.encoder.read_batch(np.stack([crops[i] for i in fresh]))  # units: None without a read-out
            for k, i in enumerate(fresh):
                last = self._expressions.get(requests[i].stream)
                memo = ExpressionMemo(embeddings[k], None if units is None else units[k], last.credit if last else 0.0)
                memos[i] = self._expressions[requests[i].stream] = memo
        smiles = []  # MediaPipe's smile as carried, before the guard: what the animators' units are lifted to
        for request, frame, memo in zip(requests, frames, memos, strict=True):
            if memo.units is not None and self.carry is not None:
                self._carry_blendshapes(self.carry, request.stream, frame, memo.units)
            smiles.append(frame.face.blendshapes[list(SMILE_BLENDSHAPES)])
            # after the carry, which moves MediaPipe's own reading: the guard scales the smile
            # and lowered brows of the blendshapes as served, carried or not, by the last mesh's
            # emotions
            if frame.face.emotions is not None:
                frame.face = replace(frame.face, blendshapes=guard_blendshapes(frame.face.blendshapes, frame.face.emotions))
            if self.options.blink_curve is not None:
                frame.face = replace(frame.face, blendshapes=self.options.blink_curve.apply(frame.face.blendshapes))
        encode_ms, started = crop_ms + ms_since(started), time.perf_counter()
        rows_by_ref: dict[AnimatorRef, list[tuple[int, str]]] = {}
        for row, request in enumerate(requests):
            for avatar_id, ref in request.animators.items():
                if (avatar_id, ref) in memos[row].controls:  # a reused reading, this avatar read with it
                    frames[row].raw[avatar_id] = memos[row].controls[avatar_id, ref]
                else:
                    rows_by_ref.setdefault(ref, []).append((row, avatar_id))
        # each frame's units as its animators read them, guarded once for all its avatars
        animated = {row: self._animated_units(memos[row], frames[row], smiles[row])
                    for targets in rows_by_ref.values() for row, _ in targets}
        for ref, targets in rows_by_ref.items():
            rows = [row for row, _ in targets]
            units = None if animated[rows[0]] is None else np.stack([animated[row] for row in rows])
            controls = self._animator(ref.path).predict(
                np.stack([memos[row].embedding for row in rows]), ref.key,
                np.stack([frames[row].face.blendshapes for row in rows]), units=units,
            )  # fmt: skip
            for (row, avatar_id), values in zip(targets, controls, strict=True):
                frames[row].raw[avatar_id] = memos[row].controls[avatar_id, ref] = values
        animate_ms = ms_since(started)
        share = 1.0 / len(frames)
        for frame, pose in zip(frames, poses, strict=True):
            frame.head_pose = pose
            frame.timings.update(pose=pose_ms * share, encode=encode_ms * share, animate=animate_ms * share)

    def _animated_units(self, memo: ExpressionMemo, frame: FrameFace, smile: np.ndarray) -> np.ndarray | None:
        """The units an animator reads: the encoder's, their lip-corner pulls raised to the
        frame's (2,) unguarded smile where they read less (`SmileLift`), then guarded by the
        last mesh's emotions (the carry reads the encoder's own); None for an encoder without
        the read-out."""
        units = memo.units
        if units is None:
            return None
        if self.smile_lift is not None:
            units = self.smile_lift.lift(units, smile)
        if self.unit_guard is not None and frame.face.emotions is not None:
            units = self.unit_guard.guard(units, frame.face.emotions)
        return units

    def _expression_memo(self, stream: str, frame: FrameFace) -> ExpressionMemo | None:
        """The stream's last expression reading when this frame may reuse it, or None when its
        own is read: one frame in `expression_slowdown` (every frame when the worker keeps up),
        a frame with a new mesh, one whose mesh is due (the carry starts from its units), and
        the first frame after a mesh run after its answer (`refresh_meshes` drops the stream's
        reading)."""
        memo = self._expressions.get(stream)
        if memo is None:
            return None
        memo.credit += 1.0 / self.pace.expression_slowdown
        if memo.credit >= 1.0 or frame.meshed or stream in self._mesh_due:
            memo.credit = max(memo.credit - 1.0, 0.0)
            return None
        return memo

    def _carry_blendshapes(self, carry: BlendshapeCarry, stream: str, frame: FrameFace, units: np.ndarray) -> None:
        """A frame read with its own mesh starts a carry; one read with an earlier mesh gets that
        mesh's blendshapes carried by the units' change since (inference.face.carry)."""
        if frame.face is None:
            return
        if frame.meshed:
            self._carried_from[stream] = (frame.face.blendshapes, units)
        elif stream in self._carried_from:
            blendshapes, units_at_mesh = self._carried_from[stream]
            frame.face = replace(frame.face, blendshapes=carry.carry(blendshapes, units, units_at_mesh))
        if stream in self._mesh_due:
            self._units_due[stream] = units

    def refresh_meshes(self) -> None:
        """Run the meshes that came due in the last batch, each on its own frame: the readings
        of those streams' next frames. A mesh that fails drops its stream's track: the next
        frame runs the mesh itself and meets the error as its own."""
        started = time.perf_counter()
        try:
            while self._mesh_due:
                stream, (image, time_s) = self._mesh_due.popitem()
                tracker = self.trackers.get(stream)
                if tracker is not None:  # not forgotten meanwhile
                    mesh_started = time.perf_counter()
                    reading = None
                    try:
                        reading = tracker.refresh(image, time_s)
                    except Exception:
                        del self.trackers[stream]
                    units = self._units_due.pop(stream, None)
                    self._expressions.pop(stream, None)  # the next frame reads its own, with this mesh
                    if reading is not None and units is not None:
                        self._carried_from[stream] = (reading.blendshapes, units)
                    else:  # nothing to carry this mesh's reading from
                        self._carried_from.pop(stream, None)
                    self._mesh_ms[stream] = self._mesh_ms.get(stream, 0.0) + ms_since(mesh_started)
        finally:
            ended = time.perf_counter()
            self.pace.record(started, ended, ended - started)

    def forget(self, stream: str) -> None:
        self.trackers.pop(stream, None)
        self._mesh_due.pop(stream, None)
        self._mesh_ms.pop(stream, None)
        self._carried_from.pop(stream, None)
        self._units_due.pop(stream, None)
        self._expressions.pop(stream, None)

    def _tracker(self, stream: str) -> FrontTrack:
        tracker = self.trackers.get(stream)
        if tracker is None:
            rate = self.options.face_rate_hz
            interval = 1.0 / rate if rate > 0 else 0.0
            phase = zlib.crc32(stream.encode()) / 2**32  # spreads actors' mesh frames
            tracker = self.trackers[stream] = self.front.track(interval, phase)
        return tracker

    def _animator(self, path: str) -> AnimatorRuntime:
        runtime = self._animators.get(path)
        if runtime is None:
            runtime = self._animators[path] = AnimatorRuntime.load(Path(path))
            while len(self._animators) > CACHED_ANIMATORS:
                self._animators.popitem(last=False)
        self._animators.move_to_end(path)
        return runtime


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
