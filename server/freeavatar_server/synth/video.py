"""Test videos: smooth expression, head-pose and placement trajectories of one synthetic actor,
rendered to an mp4 with the per-frame ground truth in a JSON file beside it.

The trajectory is a sequence of held expressions (neutral, smiles, frowns, surprise, anger,
disgust, ...) joined by eased transitions, with talking (syllable-rate jaw and lip motion) over
some segments, spontaneous blinks every few seconds, a slowly wandering head pose, and a face
that drifts and changes size in the frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freeavatar_server.media import VideoWriter
from freeavatar_server.synth.actors import (
    ACTION_UNITS,
    AU_INDEX,
    N_AU,
    FaceBatch,
    mirror_permutation,
    prototype_vector,
    render_frames,
)

# (name, AU prototype or None for neutral, talks?) acts the trajectory strings together
_ACTS: tuple[tuple[str, str | None, bool], ...] = (
    ("neutral", None, False), ("talk", None, True), ("smile", "smile", False),
    ("laugh", "laugh", False), ("smile_talk", "smile", True), ("sad", "sad", False),
    ("frown", "anger", False), ("surprise", "surprise", False), ("disgust", "disgust", False),
    ("fear", "fear", False), ("smirk", "smirk", False), ("kiss", "kiss", False),
    ("doubt", "doubt", False), ("angry_talk", "anger", True), ("wink", "wink", False),
)  # fmt: skip
_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Trajectory:
    """Per-frame ground truth of a clip (T frames)."""

    fps: float
    width: int
    height: int
    seed: int
    identity_id: int
    expressions: np.ndarray  # (T, N_AU) float32
    poses: np.ndarray  # (T, 3) float32 yaw, pitch, roll degrees
    face_boxes: np.ndarray  # (T, 4) float32 requested placement, pixels
    acts: tuple[str, ...]  # (T,) the act each frame belongs to

    @property
    def n_frames(self) -> int:
        return len(self.expressions)


def _ease(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _wander(t: np.ndarray, rng: np.random.Generator, amplitude: float, n: int = 3) -> np.ndarray:
    """A smooth bounded random signal: a few slow sinusoids, peak at most `amplitude`."""
    freqs = rng.uniform(0.04, 0.35, n)
    phases = rng.uniform(0, 2 * np.pi, n)
    weights = rng.dirichlet(np.ones(n))
    return amplitude * np.sum(
        weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]), axis=0
    )


def make_trajectory(
    seconds: float,
    fps: float = 30.0,
    *,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    identity_id: int | None = None,
) -> Trajectory:
    """A smooth, deterministic clip trajectory of `seconds` at `fps`."""
    if seconds <= 0 or fps <= 0:
        raise ValueError("seconds and fps must be positive")
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * fps))
    t = np.arange(n) / fps
    ident = int(rng.integers(0, 2**31)) if identity_id is None else int(identity_id)

    # held acts with eased transitions between their targets
    targets, talking, names, starts = [], [], [], []
    clock, k = 0.0, 0
    while clock < seconds:
        name, proto, talks = _ACTS[0] if k == 0 else _ACTS[rng.integers(len(_ACTS))]
        vec = (
            np.zeros(N_AU, np.float32)
            if proto is None
            else prototype_vector(proto, rng.uniform(0.5, 1.0))
        )
        if rng.random() < 0.5:
            vec = vec[mirror_permutation()]
        targets.append(vec)
        talking.append(talks)
        names.append(name)
        starts.append(clock)
        clock += rng.uniform(0.8, 2.5)
        k += 1
    starts_arr = np.array(starts)
    seg = np.searchsorted(starts_arr, t, side="right") - 1
    expr = np.zeros((n, N_AU), np.float32)
    for i in range(n):
        s = seg[i]
        cur = targets[s]
        prev = targets[s - 1] if s > 0 else cur
        w = _ease((t[i] - starts_arr[s]) / 0.35)  # 350 ms onset, like a real expression change
        expr[i] = prev + (cur - prev) * w

    # talking: syllables at 3-5 Hz open the jaw and part the lips, now and then round them
    rate = rng.uniform(3.0, 5.0)
    syllable = np.abs(np.sin(np.pi * rate * t)) ** 1.5
    loud = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * rng.uniform(0.3, 0.7) * t + rng.uniform(0, 6)))
    talk_on = np.array([talking[s] for s in seg], dtype=np.float32)
    talk_on = np.convolve(
        np.pad(talk_on, 2, mode="edge"), np.ones(5) / 5, mode="valid"
    )  # ease in/out
    jaw = talk_on * syllable * loud * 0.45
    expr[:, AU_INDEX["jaw_drop"]] = np.maximum(expr[:, AU_INDEX["jaw_drop"]], jaw)
    expr[:, AU_INDEX["lips_part"]] = np.maximum(
        expr[:, AU_INDEX["lips_part"]], np.clip(jaw * 2.0, 0, 1)
    )
    rounded = talk_on * (np.sin(2 * np.pi * 1.3 * t + 1.0) > 0.6) * syllable * 0.5
    expr[:, AU_INDEX["lip_pucker"]] = np.maximum(expr[:, AU_INDEX["lip_pucker"]], rounded)

    # spontaneous blinks: every 2-5 s, 150-250 ms, both eyes (sin^2 lid profile)
    blink = np.zeros(n, np.float32)
    when = rng.uniform(0.5, 2.0)
    while when < seconds:
        dur = rng.uniform(0.15, 0.25)
        phase = (t - when) / dur
        inside = (phase >= 0) & (phase <= 1)
        blink[inside] = np.maximum(blink[inside], np.sin(np.pi * phase[inside]) ** 2)
        when += rng.uniform(2.0, 5.0)
    for side in ("blink_L", "blink_R"):
        expr[:, AU_INDEX[side]] = np.maximum(expr[:, AU_INDEX[side]], blink)

    poses = np.stack([_wander(t, rng, 25.0), _wander(t, rng, 12.0), _wander(t, rng, 10.0)], axis=1)

    size = rng.uniform(0.2, 0.32) * height * (1.0 + 0.2 * _wander(t, rng, 1.0, n=2))
    cx = width / 2 + _wander(t, rng, 0.3 * width) - 0.0
    cy = height * 0.45 + _wander(t, rng, 0.12 * height)
    cx = np.clip(cx, size / 2, width - size / 2)
    cy = np.clip(cy, 0.7 * size, height - 0.7 * size)
    boxes = np.stack([cx - size / 2, cy - 0.65 * size, cx + size / 2, cy + 0.65 * size], axis=1)
    return Trajectory(
        fps=float(fps), width=width, height=height, seed=seed, identity_id=ident,
        expressions=np.clip(expr, 0, 1).astype(np.float32), poses=poses.astype(np.float32),
        face_boxes=boxes.astype(np.float32), acts=tuple(names[s] for s in seg),
    )  # fmt: skip


def render_trajectory_frames(traj: Trajectory, start: int, stop: int) -> FaceBatch:
    """Frames [start, stop) of a trajectory. One scene seed for the whole clip keeps the
    background, light and camera constant, as in a real take; sensor noise is fresh per frame."""
    count = stop - start
    return render_frames(
        traj.expressions[start:stop],
        np.full(count, traj.identity_id, dtype=np.int64),
        width=traj.width,
        height=traj.height,
        face_boxes=traj.face_boxes[start:stop],
        poses=traj.poses[start:stop],
        sample_seeds=np.full(count, traj.seed, dtype=np.int64),
        noise_seeds=frame_noise_seeds(traj.seed, start, stop),
    )


def trajectory_frames(traj: Trajectory, chunk: int = 16) -> Iterator[np.ndarray]:
    """A trajectory's (H, W, 3) uint8 frames in order, rendered `chunk` at a time."""
    for start in range(0, traj.n_frames, chunk):
        yield from render_trajectory_frames(traj, start, min(start + chunk, traj.n_frames)).images


def frame_noise_seeds(seed: int, start: int, stop: int) -> np.ndarray:
    """Sensor-noise seeds of frames [start, stop) of the clip rendered with `seed`."""
    return seed * 1_000_003 + np.arange(start, stop, dtype=np.int64)


def write_video(
    traj: Trajectory,
    out: str | os.PathLike[str],
    *,
    chunk: int = 8,
    on_frames: Callable[[int], None] | None = None,
) -> Path:
    """Render the trajectory to `out` (mp4, H.264 when available) and write the ground truth
    to the .json beside it. `on_frames(k)` is called after every k frames (progress bars).
    Returns the JSON path."""
    out = Path(out)
    records: list[dict[str, object]] = []
    with VideoWriter(out, traj.fps, traj.width, traj.height) as video:
        for start in range(0, traj.n_frames, chunk):
            stop = min(start + chunk, traj.n_frames)
            batch = render_trajectory_frames(traj, start, stop)
            for j, image in enumerate(batch.images):
                video.write(image)
                records.append(_record(traj, start + j, batch, j))
            if on_frames is not None:
                on_frames(stop - start)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(_header(traj, out.name) | {"frames": records}))
    return json_path


def _header(traj: Trajectory, video_name: str) -> dict[str, object]:
    return {
        "version": _SCHEMA_VERSION,
        "video": video_name,
        "fps": traj.fps,
        "width": traj.width,
        "height": traj.height,
        "seed": traj.seed,
        "identity_id": traj.identity_id,
        "n_frames": traj.n_frames,
        "action_units": list(ACTION_UNITS),
        "head_pose_units": "degrees: +yaw faces image right, +pitch up, +roll clockwise",
        "face_box_units": "pixels x0, y0, x1, y1 (forehead to chin, cheek to cheek)",
    }


def _record(traj: Trajectory, index: int, batch: FaceBatch, j: int) -> dict[str, object]:
    yaw, pitch, roll = (round(float(x), 4) for x in batch.poses[j])
    return {
        "index": index,
        "time": round(index / traj.fps, 6),
        "act": traj.acts[index],
        "action_units": [round(float(x), 5) for x in batch.expressions[j]],
        "head_pose": {"yaw": yaw, "pitch": pitch, "roll": roll},
        "face_box": [round(float(x), 3) for x in batch.boxes[j]],
    }


@dataclass(frozen=True)
class GroundTruth:
    """A clip's ground truth as read back from its JSON."""

    fps: float
    width: int
    height: int
    identity_id: int
    action_units: tuple[str, ...]
    expressions: np.ndarray  # (T, N_AU)
    poses: np.ndarray  # (T, 3)
    face_boxes: np.ndarray  # (T, 4)
    times: np.ndarray  # (T,)


def read_ground_truth(path: str | os.PathLike[str]) -> GroundTruth:
    data = json.loads(Path(path).read_text())
    frames = data["frames"]
    return GroundTruth(
        fps=float(data["fps"]),
        width=int(data["width"]),
        height=int(data["height"]),
        identity_id=int(data["identity_id"]),
        action_units=tuple(data["action_units"]),
        expressions=np.array([f["action_units"] for f in frames], dtype=np.float32).reshape(
            -1, len(data["action_units"])
        ),
        poses=np.array(
            [[f["head_pose"][k] for k in ("yaw", "pitch", "roll")] for f in frames],
            dtype=np.float32,
        ).reshape(-1, 3),
        face_boxes=np.array([f["face_box"] for f in frames], dtype=np.float32).reshape(-1, 4),
        times=np.array([f["time"] for f in frames], dtype=np.float64),
    )
