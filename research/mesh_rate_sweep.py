"""What running the face mesh less often costs: synthetic clips of held-out people read by the
live path's own analysis (`live.analysis.Analyser`, as a worker runs it: each frame answered,
then the meshes that came due), at several mesh rates, against the actor's true rig and head
pose. Between meshes optical flow follows the face box (`inference.face.flow`) and the
encoder carries the blendshapes (`inference.face.carry`); pose, the encoder and the animators
read every frame. Run with an older checkout on PYTHONPATH, it measures that version.

    .venv/bin/python research/mesh_rate_sweep.py [--clips 6] [--rates 0 15 7.5 5 3 2]

Per rate (0: the mesh on every frame): mesh runs a second, the worker's mean ms a frame (its
stages and the meshes run after the answers), each built-in avatar's mean per-control
correlation with its true rig (each avatar's default reader, the live path's One Euro filter;
controls that move), the ARKit avatar's eyeBlinkLeft and jawOpen, and the head pose's mean
absolute error (yaw, pitch, roll degrees, before smoothing).
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.progress import track

from freeavatar._proto import stream_pb2
from freeavatar_server.inference.shipped import ANIMATOR_DIR, ENCODER_INT8_ONNX
from freeavatar_server.live.analysis import Analyser, AnalysisOptions, AnalysisRequest, AnimatorRef
from freeavatar_server.live.sessions import Binding
from freeavatar_server.live.smoothing import OneEuroFilter
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.synth.video import Trajectory, render_trajectory_frames
from freeavatar_server.training.correlation import column_correlations
from freeavatar_server.training.face.blendshape_carry import FPS, clip_trajectories

SEED = 46_000_000  # clips apart from the carry's fit and test clips and the smoothing sweep's
REPORTED = ("eyeBlinkLeft", "jawOpen")


def frames_of(trajectory: Trajectory) -> np.ndarray:
    return np.concatenate([
        render_trajectory_frames(trajectory, start, min(start + 16, trajectory.n_frames)).images
        for start in range(0, trajectory.n_frames, 16)
    ])  # fmt: skip


def read_clip(analyser: Analyser, stream: str, frames: np.ndarray) -> tuple[list, float, int]:
    """Each frame's Analysis (None where no face was found), the worker's ms over the clip and
    how many meshes it ran (a mesh's time is told with the stream's next frame)."""
    animators = {name: AnimatorRef(str(ANIMATOR_DIR), name) for name in BUILTIN_AVATARS}
    analyses, spent, meshes = [], 0.0, 0
    for t, frame in enumerate(frames):
        request = AnalysisRequest(stream, frame, round(t / FPS * 1e6) + 1, animators)
        analysis = analyser.analyse_batch([request])[0]
        analyser.refresh_meshes()
        spent += sum(analysis.timings_ms.values()) + sum(analysis.after_ms.values())
        meshes += ("mesh" in analysis.timings_ms) + ("mesh" in analysis.after_ms)
        analyses.append(analysis if analysis.face is not None else None)
    analyser.forget(stream)
    return analyses, spent, meshes


def score(trajectories: list[Trajectory], readings: list[list]) -> dict[str, float]:
    """Per avatar mean r with its true rig (and the ARKit avatar's REPORTED controls), and the
    head pose's mean absolute error, over the frames with a face."""
    out: dict[str, float] = {}
    for name, avatar in BUILTIN_AVATARS.items():
        binding = Binding.resolve(stream_pb2.AvatarBinding(avatar_id=name), avatar.spec)
        read, want = [], []
        for trajectory, analyses in zip(trajectories, readings, strict=True):
            smooth, true_rig = OneEuroFilter(), avatar.expected_rig(trajectory.expressions)
            for t, analysis in enumerate(analyses):
                if analysis is not None:
                    read.append(smooth(binding.read(analysis.raw[name], analysis.blendshapes), t / FPS))
                    want.append(true_rig[t])
        read, want = np.array(read), np.array(want)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--rates", type=float, nargs="+", default=[0, 15, 7.5, 5, 3, 2])
    args = parser.parse_args()
    trajectories = clip_trajectories(args.clips, SEED, held_out=True)
    clips = [frames_of(trajectory) for trajectory in track(trajectories, description="rendering clips")]
    seconds = sum(len(frames) for frames in clips) / FPS
    for rate in args.rates:
        analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, face_rate_hz=rate))
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
