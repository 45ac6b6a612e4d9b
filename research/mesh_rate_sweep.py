"""What running the face mesh less often costs: synthetic clips of held-out people read by the
live path's own analysis (`live.analysis.Analyser`, as a worker runs it: each frame answered,
then the meshes that came due), at several mesh rates, against the actor's true rig and head
pose. Between meshes optical flow follows the face box (`inference.face.flow`) and the
encoder carries the blendshapes (`inference.face.carry`); pose, the encoder and the animators
read every frame. Run with an older checkout on PYTHONPATH, it measures that version.

    .venv/bin/python research/mesh_rate_sweep.py [--clips 6] [--rates 0 15 7.5 5 3 2] [--expression-slowdown 2]
    .venv/bin/python research/mesh_rate_sweep.py --video CLIP.mp4 [CLIP.mp4 ...]

Per rate (0: the mesh on every frame): mesh runs a second, the worker's mean ms a frame (its
stages and the meshes run after the answers), each built-in avatar's mean per-control
correlation with its true rig (each avatar's default reader, the live path's One Euro filter;
controls that move), the ARKit avatar's eyeBlinkLeft and jawOpen, and the head pose's mean
absolute error (yaw, pitch, roll degrees, before smoothing). With `--expression-slowdown S`, the
expression is read on one frame in S (as a worker does under load once its meshes are at their
floor: `live.analysis.LoadPace`), the frames between reusing the last reading.

With `--video`, real clips instead, which have no true rig: each rate is scored against the
same clips read with the mesh on every frame before its answer (each frame's own reading, where
the served path answers a frame and meshes it after): the blendshapes served (carried
between meshes, or held with `--hold`) against the mesh's own reading of each frame (mean per-blendshape r over those
that move, a few named ones, the mean absolute difference), and each avatar's controls against
its controls read from that reference (both through the One Euro filter).
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.progress import track

from freeavatar._proto import stream_pb2
from freeavatar_server.inference.shipped import ANIMATOR_DIR, ENCODER_INT8_ONNX
from freeavatar_server.live.analysis import (
    Analyser,
    AnalysisOptions,
    AnalysisRequest,
    AnimatorRef,
    LoadPace,
)
from freeavatar_server.live.sessions import Binding
from freeavatar_server.live.smoothing import OneEuroFilter
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.synth.video import Trajectory, trajectory_frames
from freeavatar_server.training.correlation import column_correlations
from freeavatar_server.training.face.blendshape_carry import FPS, clip_trajectories

SEED = 46_000_000  # clips apart from the carry's fit and test clips and the smoothing sweep's
REPORTED = ("eyeBlinkLeft", "jawOpen")


def frames_of(trajectory: Trajectory) -> np.ndarray:
    return np.stack(list(trajectory_frames(trajectory)))


def video_frames(path: str) -> tuple[np.ndarray, float]:
    """A clip's frames (N, H, W, 3) uint8 RGB and its frame rate."""
    import av  # lazy: only the --video mode reads files

    with av.open(path) as container:
        stream = container.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)]), float(stream.average_rate)


def read_clip(analyser: Analyser, stream: str, frames: np.ndarray, fps: float = FPS, mesh_first: bool = False) -> tuple[list, float, int]:
    """Each frame's Analysis (None where no face was found), the worker's ms over the clip and
    how many meshes it ran (a mesh's time is told with the stream's next frame). With
    `mesh_first`, a due mesh runs before its frame is answered (the frame's own reading),
    not after as served."""
    animators = {name: AnimatorRef(str(ANIMATOR_DIR), name) for name in BUILTIN_AVATARS}
    analyses, spent, meshes = [], 0.0, 0
    for t, frame in enumerate(frames):
        request = AnalysisRequest(stream, frame, round(t / fps * 1e6) + 1, animators)
        analysis = analyser.analyse_batch([request], mesh_after=not mesh_first)[0]
        analyser.refresh_meshes()
        spent += sum(analysis.timings_ms.values()) + sum(analysis.after_ms.values())
        meshes += ("mesh" in analysis.timings_ms) + ("mesh" in analysis.after_ms)
        analyses.append(analysis if analysis.face is not None else None)
    analyser.forget(stream)
    return analyses, spent, meshes


def avatar_readings(analyses: list, fps: float) -> dict[str, np.ndarray]:
    """Each avatar's filtered controls over a clip, as served (NaN rows where no face)."""
    out = {}
    for name, avatar in BUILTIN_AVATARS.items():
        binding = Binding.resolve(stream_pb2.AvatarBinding(avatar_id=name), avatar.spec)
        smooth, rows = OneEuroFilter(), []
        for t, analysis in enumerate(analyses):
            if analysis is None:
                rows.append(np.full(len(avatar.spec.control_names), np.nan))
            else:
                rows.append(smooth(binding.read(analysis.raw[name], analysis.blendshapes), t / fps))
        out[name] = np.array(rows)
    return out


def score(trajectories: list[Trajectory], readings: list[list]) -> dict[str, float]:
    """Per avatar mean r with its true rig (and the ARKit avatar's REPORTED controls), and the
    head pose's mean absolute error, over the frames with a face."""
    out: dict[str, float] = {}
    served = [avatar_readings(analyses, FPS) for analyses in readings]
    found = [np.array([a is not None for a in analyses]) for analyses in readings]
    for name, avatar in BUILTIN_AVATARS.items():
        read = np.concatenate([rigs[name][mask] for rigs, mask in zip(served, found, strict=True)])
        want = np.concatenate([
            avatar.expected_rig(trajectory.expressions)[mask] for trajectory, mask in zip(trajectories, found, strict=True)
        ])  # fmt: skip
        r = column_correlations(read, want)
        out[name] = float(np.nanmean(r[want.std(0) > 1e-3]))
        if name == "human_arkit":
            for control in REPORTED:
                out[control] = float(r[avatar.spec.control_names.index(control)])
    errors = [
        np.abs(analysis.head_pose - trajectory.poses[t])
        for trajectory, analyses in zip(trajectories, readings, strict=True)
        for t, analysis in enumerate(analyses)
        if analysis is not None
    ]
    out["pose_error_deg"] = float(np.mean(errors))
    return out


VIDEO_REPORTED = ("eyeBlinkLeft", "jawOpen", "mouthSmileLeft", "browInnerUp")


def score_against(reference: list[list], readings: list[list], fps: list[float]) -> dict[str, float]:
    """Readings of real clips against the same clips' every-frame mesh readings (frames where
    both found the face)."""
    from freeavatar.arkit import ARKIT_BLENDSHAPES

    served, meshed, ours, theirs = [], [], {n: [] for n in BUILTIN_AVATARS}, {n: [] for n in BUILTIN_AVATARS}
    for ref, got, rate in zip(reference, readings, fps, strict=True):
        both = [i for i, (a, b) in enumerate(zip(ref, got, strict=True)) if a is not None and b is not None]
        served += [got[i].blendshapes for i in both]
        meshed += [ref[i].blendshapes for i in both]
        ref_rig, got_rig = avatar_readings(ref, rate), avatar_readings(got, rate)
        for name in BUILTIN_AVATARS:
            ours[name].append(got_rig[name][both])
            theirs[name].append(ref_rig[name][both])
    served, meshed = np.array(served), np.array(meshed)
    r = column_correlations(served, meshed)
    moving = meshed.std(0) > 0.02
    out = {"blendshapes_r": float(np.nanmean(r[moving])), "blendshapes_abs": float(np.abs(served - meshed)[:, moving].mean())}
    out |= {name: float(r[ARKIT_BLENDSHAPES.index(name)]) for name in VIDEO_REPORTED}
    for name in BUILTIN_AVATARS:
        a, b = np.concatenate(ours[name]), np.concatenate(theirs[name])
        out[name] = float(np.nanmean(column_correlations(a, b)[b.std(0) > 1e-3]))
    return out


def sweep_videos(paths: list[str], rates: list[float], carry: bool = True) -> None:
    clips = [video_frames(path) for path in track(paths, description="decoding clips")]
    seconds = sum(len(frames) / fps for frames, fps in clips)
    analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, face_rate_hz=0))
    reference = [read_clip(analyser, f"clip{i}", frames, fps, mesh_first=True)[0] for i, (frames, fps) in enumerate(clips)]
    for rate in rates:
        analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, face_rate_hz=rate))
        if not carry:
            analyser.carry = None  # hold the last mesh's blendshapes between meshes
        readings, meshes = [], 0
        for i, (frames, fps) in enumerate(clips):
            analyses, _, runs = read_clip(analyser, f"clip{i}", frames, fps)
            readings.append(analyses)
            meshes += runs
        found = sum(a is not None for analyses in readings for a in analyses) / sum(len(c) for c, _ in clips)
        line = "  ".join(f"{k} {v:.3f}" for k, v in score_against(reference, readings, [f for _, f in clips]).items())
        print(f"rate {rate:g}: {meshes / seconds:.1f} meshes/s, found {found:.3f}  {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--rates", type=float, nargs="+", default=[0, 15, 7.5, 5, 3, 2])
    parser.add_argument("--video", nargs="+", help="real clips, scored against their every-frame mesh reading")
    parser.add_argument("--hold", action="store_true", help="with --video: hold the last mesh's blendshapes (no carry)")
    parser.add_argument("--expression-slowdown", type=float, default=1.0, help="read the expression on one frame in this many")
    args = parser.parse_args()
    if args.video:
        if args.expression_slowdown != 1.0:
            parser.error("--expression-slowdown is for the synthetic clips, not --video")
        sweep_videos(args.video, args.rates, carry=not args.hold)
        return
    trajectories = clip_trajectories(args.clips, SEED, held_out=True)
    clips = [frames_of(trajectory) for trajectory in track(trajectories, description="rendering clips")]
    seconds = sum(len(frames) for frames in clips) / FPS
    for rate in args.rates:
        analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, face_rate_hz=rate))
        if args.expression_slowdown > 1:  # held there, as under a steady overload
            slowdown = args.expression_slowdown
            analyser.pace = LoadPace(expression_most=slowdown, expression_slowdown=slowdown, every_s=float("inf"))
        readings, spent, meshes = [], 0.0, 0
        for i, frames in enumerate(clips):
            analyses, ms, runs = read_clip(analyser, f"clip{i}", frames)
            readings.append(analyses)
            spent, meshes = spent + ms, meshes + runs
        scores = score(trajectories, readings)
        found = sum(a is not None for analyses in readings for a in analyses) / sum(len(c) for c in clips)
        line = "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
        print(
            f"rate {rate:g}: {meshes / seconds:.1f} meshes/s, found {found:.3f}, "
            f"{spent / (seconds * FPS):.2f} ms a frame  {line}",
            flush=True,
        )


if __name__ == "__main__":
    main()
