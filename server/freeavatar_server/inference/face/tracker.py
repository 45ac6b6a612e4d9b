"""Per-actor face tracking: detect on a shrunk frame, then follow the face cheaply.

States of one `FaceTracker` (one per actor, nothing shared but the stateless localiser):

* lost: every frame runs the learned localiser on the whole frame (160x120 for 640x480, well
  under a millisecond). When it is unsure, the Haar cascade gives a second opinion, at most
  every `haar_every` frames (every `haar_every_idle` when the frame looks empty) because it
  costs tens of milliseconds.
* learned track: the localiser runs on a square window around the last box (2.5 face widths,
  96x96 input): higher resolution on the face than a full-frame pass and less than half its
  cost. It runs every `track_every` frames; in between the box coasts on its last per-frame
  motion (a face moves a few pixels in 33 ms, and the frames between measurements cost
  nothing). Every `detect_every` frames a full-frame pass checks the track has not locked onto
  the wrong thing.
* template track (a face only the cascade saw, i.e. a real photograph the synthetic-trained
  model doubts): normalised cross-correlation of a grey template, re-anchored by the cascade
  inside the window every `haar_refresh` frames; hands over to the learned track only when the
  localiser is very sure (its boxes on real faces wander more than the cascade's).

The reported box goes through a One Euro filter (per coordinate, speed measured in face widths
per second), which removes detector jitter at rest and follows fast motion without lag; the
unfiltered box drives the next window, so filtering never makes the tracker trail the face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from freeavatar_server.inference.face.haar import HaarFaceFinder, TemplateTracker
from freeavatar_server.inference.face.localiser import FaceLocaliser


@dataclass(frozen=True)
class FaceObservation:
    """Where the actor's face is in one frame."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels, smoothed
    confidence: float  # in [0, 1]
    source: str  # "detect", "track", "haar" or "template": which path found it
    raw_box: tuple[float, float, float, float]  # before smoothing


@dataclass(frozen=True)
class SmoothingConfig:
    """One Euro filter (Casiez et al. 2012): cutoff = min_cutoff + beta * speed."""

    # Swept on three 5 s synthetic clips: (1 Hz, 5) cuts centre jitter 2.5x for -0.01 mean IoU;
    # a larger beta follows faster but keeps more jitter.
    min_cutoff: float = 1.0  # Hz at rest: lower = steadier, more lag
    beta: float = 5.0  # extra Hz per face width per second of motion
    d_cutoff: float = 1.0  # Hz for the speed estimate
    enabled: bool = True


@dataclass(frozen=True)
class TrackerConfig:
    present_threshold: float = 0.5  # learned confidence to start a track
    keep_threshold: float = 0.3  # learned confidence to keep one (hysteresis)
    window_scale: float = 2.5  # tracking window side in face-box widths/heights (max)
    track_every: int = 2  # window pass period while tracking; the box coasts in between
    detect_every: int = 15  # full-frame check while tracking
    # The cascade costs tens of ms, so while lost it runs every `haar_every` frames only when
    # the learned model sees something face-like it is unsure of (a real face scores ~0.2-0.4,
    # an empty synthetic room < 0.2), and otherwise every `haar_every_idle` frames.
    haar_every: int = 10
    haar_unsure: float = 0.1
    haar_every_idle: int = 60
    haar_refresh: int = 10  # cascade re-anchor period of a template track
    template_min_score: float = 0.45  # NCC below this: the template track is lost
    # A template track (a face only the cascade found) goes to the learned track only when the
    # localiser is very sure: on a real face its boxes wander (hair, jaw) more than Haar's.
    handover_threshold: float = 0.9
    use_haar: bool = True
    fps: float = 30.0  # frame clock when update() gets no timestamps
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)


class BoxFilter:
    """One Euro filter over (cx, cy, w, h); speed is normalised by the face width."""

    def __init__(self, config: SmoothingConfig) -> None:
        self.config = config
        self.value: np.ndarray | None = None
        self.speed = np.zeros(4)

    def reset(self) -> None:
        self.value, self.speed = None, np.zeros(4)

    @staticmethod
    def _alpha(dt: float, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, box: np.ndarray, dt: float) -> np.ndarray:
        x = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0],
                      box[3] - box[1]], dtype=np.float64)  # fmt: skip
        if not self.config.enabled or self.value is None or dt <= 0:
            self.value = x
            return np.asarray(box, dtype=np.float64)
        c = self.config
        raw_speed = (x - self.value) / dt
        self.speed = self.speed + self._alpha(dt, c.d_cutoff) * (raw_speed - self.speed)
        cutoff = c.min_cutoff + c.beta * np.abs(self.speed) / max(x[2], 1.0)
        self.value = self.value + self._alpha(dt, cutoff) * (x - self.value)
        cx, cy, w, h = self.value
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def window_around(box: np.ndarray, scale: float) -> np.ndarray:
    """Square (x0, y0, x1, y1) of side scale * max(w, h), centred on the box."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = scale * max(box[2] - box[0], box[3] - box[1], 4.0) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float64)


class FaceTracker:
    """Finds and follows one actor's face across the frames of their stream.

    `localiser` may be shared between trackers (it holds no per-stream state); everything else
    here is this actor's own. Not thread-safe: one stream feeds one tracker.
    """

    def __init__(
        self, localiser: FaceLocaliser | None = None, config: TrackerConfig | None = None
    ) -> None:
        self.config = config or TrackerConfig()
        self.localiser = localiser or FaceLocaliser()
        self._haar: HaarFaceFinder | None = None  # loaded on first use: joining stays cheap
        self.filter = BoxFilter(self.config.smoothing)
        self.reset()

    @property
    def haar(self) -> HaarFaceFinder | None:
        if self._haar is None and self.config.use_haar:
            self._haar = HaarFaceFinder()
        return self._haar

    def reset(self) -> None:
        """Forget the face (a new take, a camera switch)."""
        self.mode = "lost"  # "lost" | "learned" | "template"
        self.box: np.ndarray | None = None
        self.template: TemplateTracker | None = None
        self.confidence = 0.0
        self.anchor_confidence = 0.0  # the cascade's confidence in a template track
        self.since_detect = 0
        self.since_window = 0  # frames since the last window pass (learned track)
        # the box's per-frame motion at the last window pass; None right after a re-anchor
        self.motion: np.ndarray | None = np.zeros(4)
        self.since_haar = self.config.haar_every_idle  # a cascade run may go on the first frame
        self.last_time: float | None = None
        self.filter.reset()

    # -- public --------------------------------------------------------------------------

    def update(self, frame: np.ndarray, timestamp: float | None = None) -> FaceObservation | None:
        """The face in this frame (RGB uint8 (H, W, 3)), or None when there is none."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        dt = self._tick(timestamp)
        found = self._step(frame)
        if found is None:
            self.filter.reset()
            return None
        box, source = found
        smooth = self.filter(box, dt)
        return FaceObservation(
            box=tuple(float(v) for v in smooth),  # type: ignore[arg-type]
            confidence=float(np.clip(self.confidence, 0.0, 1.0)),
            source=source,
            raw_box=tuple(float(v) for v in box),  # type: ignore[arg-type]
        )

    # -- steps ---------------------------------------------------------------------------

    def _tick(self, timestamp: float | None) -> float:
        if timestamp is None:
            return 1.0 / self.config.fps
        dt = 1.0 / self.config.fps if self.last_time is None else timestamp - self.last_time
        self.last_time = timestamp
        return dt if dt > 0 else 1.0 / self.config.fps

    def _step(self, frame: np.ndarray) -> tuple[np.ndarray, str] | None:
        self.since_haar += 1
        if self.mode == "learned":
            found = self._track_learned(frame)
        elif self.mode == "template":
            found = self._track_template(frame)
        else:
            found = None
        if found is None:  # lost (or never had it): search the whole frame now
            self.mode, self.template = "lost", None
            found = self._acquire(frame)
        return found

    def _acquire(self, frame: np.ndarray) -> tuple[np.ndarray, str] | None:
        c = self.config
        det = self.localiser.detect(frame)
        if det.confidence >= c.present_threshold:
            box = det.box.astype(np.float64)
            # one window pass refines the box at the higher resolution tracking uses
            refined = self.localiser.detect_in_window(frame, window_around(box, c.window_scale))
            if refined.confidence >= c.keep_threshold and _iou(refined.box, box) > 0.3:
                box = refined.box.astype(np.float64)
            self._start("learned", box, det.confidence)
            return box, "detect"
        wait = c.haar_every if det.confidence >= c.haar_unsure else c.haar_every_idle
        if self.haar is None or self.since_haar < wait:
            return None
        self.since_haar = 0
        hit = self.haar.detect(frame)
        if hit is None:
            return None
        self._start("template", hit.box.astype(np.float64), hit.confidence)
        self.template, self.anchor_confidence = TemplateTracker(frame, hit.box), hit.confidence
        return self.box, "haar"  # type: ignore[return-value]

    def _start(self, mode: str, box: np.ndarray, confidence: float) -> None:
        if self.mode == "lost":
            self.filter.reset()
        self.mode, self.box, self.confidence, self.since_detect = mode, box, confidence, 0
        self.since_window, self.motion = 0, np.zeros(4)

    def _track_learned(self, frame: np.ndarray) -> tuple[np.ndarray, str] | None:
        c = self.config
        assert self.box is not None
        self.since_detect += 1
        if self.since_detect >= c.detect_every:
            self.since_detect = 0
            full = self.localiser.detect(frame)
            if full.confidence >= c.present_threshold and _iou(full.box, self.box) < 0.3:
                # the track drifted onto something else while a face is plainly elsewhere
                self.filter.reset()
                self.box, self.since_window, self.motion = full.box.astype(np.float64), 0, None
        self.since_window += 1
        if self.motion is not None and self.since_window < c.track_every:
            self.box = self.box + self.motion
            return self.box, "track"
        ahead = self.box if self.motion is None else self.box + self.motion
        det = self.localiser.detect_in_window(frame, window_around(ahead, c.window_scale))
        if det.confidence < c.keep_threshold:
            return None
        measured = det.box.astype(np.float64)
        if self.motion is None:  # re-anchored by the full frame this frame: no motion known yet
            self.motion = np.zeros(4)
        else:
            last = self.box - self.motion * (self.since_window - 1)  # where the last pass put it
            self.motion = (measured - last) / self.since_window
        self.box, self.confidence, self.since_window = measured, det.confidence, 0
        return self.box, "track"

    def _track_template(self, frame: np.ndarray) -> tuple[np.ndarray, str] | None:
        c = self.config
        assert self.box is not None and self.template is not None
        window = window_around(self.box, c.window_scale)
        det = self.localiser.detect_in_window(frame, window)
        if det.confidence >= c.handover_threshold and _iou(det.box, self.box) > 0.3:
            self.mode, self.template = "learned", None  # the model is sure now: hand over
            self.box, self.confidence = det.box.astype(np.float64), det.confidence
            return self.box, "track"
        box, score = self.template.update(frame)
        if self.since_haar >= c.haar_refresh and self.haar is not None:
            self.since_haar = 0
            hit = self._haar_in_window(frame, window)
            if hit is not None:
                self.template = TemplateTracker(frame, hit.box)
                self.box, self.confidence = hit.box.astype(np.float64), hit.confidence
                self.anchor_confidence = hit.confidence
                return self.box, "haar"
        if score < c.template_min_score:
            return None
        self.box = box.astype(np.float64)
        self.confidence = min(self.anchor_confidence, score)
        return self.box, "template"

    def _haar_in_window(self, frame: np.ndarray, window: np.ndarray):  # -> HaarHit | None
        assert self.haar is not None
        h, w = frame.shape[:2]
        x0, y0 = max(int(window[0]), 0), max(int(window[1]), 0)
        x1, y1 = min(int(window[2]), w), min(int(window[3]), h)
        if x1 - x0 < 24 or y1 - y0 < 24:
            return None
        # the face fills ~40% of the window: skip the small scales that cost the most
        return self.haar.detect(frame[y0:y1, x0:x1], offset=(x0, y0), min_face=0.25)
