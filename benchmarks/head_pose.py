"""Head pose: error and speed of the shipped model, on crops and through the tracker.

    python benchmarks/head_pose.py [--faces 1024] [--frames 512] [--clip-seconds 6]
                                   [--live-seconds 10] [--json]

One thread everywhere (torch for the synthetic renderer, ONNX Runtime, OpenCV), as the
streaming server runs it. Held-out crops use identities >= 1,000,000 and seeds no training
shard uses. The clip is a 640x480 `make_trajectory` take (wandering head, talking, blinks, a
drifting face) run through the face front end + crop_face + the model, as the pipeline runs it, before
any smoothing. `--live-seconds` streams the demo clip through a server process (one actor, the
three built-in avatars, 30 fps) and reports its per-stage timings, the `pose` stage among them
(0 skips it). Prints one JSON object. Results: docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

AXES = ("yaw", "pitch", "roll")
ASTRONAUT_BOX = np.array([175.0, 66.0, 275.0, 176.0])  # as in face_finder_speed.py


def timings(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "mean_ms": round(float(a.mean()), 4),
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "n": len(a),
    }


def errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, object]:
    return {
        "mae_deg": {a: round(float(e), 2) for a, e in zip(AXES, np.abs(pred - truth).mean(0), strict=True)},
        "zero_predictor_mae_deg": {a: round(float(e), 2) for a, e in zip(AXES, np.abs(truth).mean(0), strict=True)},
        "p90_abs_error_deg": {a: round(float(e), 2) for a, e in zip(AXES, np.percentile(np.abs(pred - truth), 90, axis=0), strict=True)},
        "n": len(truth),
    }  # fmt: skip


def bench_clip(estimator, seconds: float, seed: int) -> dict:
    from freeavatar_server.inference.face import FaceFront, crop_face
    from freeavatar_server.synth.video import make_trajectory, render_trajectory_frames

    traj = make_trajectory(seconds, 30.0, seed=seed)
    tracker = FaceFront(threads=1).track()
    pred, truth = [], []
    for start in range(0, traj.n_frames, 8):
        batch = render_trajectory_frames(traj, start, min(start + 8, traj.n_frames))
        for j, image in enumerate(batch.images):
            obs = tracker.update(image)
            if obs is not None:
                pred.append(estimator.estimate(crop_face(image, obs.box, estimator.size)[None])[0])
                truth.append(batch.poses[j])
    pred_a, truth_a = np.array(pred), np.array(truth)
    corr = {a: round(float(np.corrcoef(pred_a[:, k], truth_a[:, k])[0, 1]), 3) for k, a in enumerate(AXES)}
    return errors(pred_a, truth_a) | {"correlation": corr, "frames": traj.n_frames}  # fmt: skip


def bench_astronaut(estimator) -> dict:
    """No ground truth: the photo is near frontal. The pose on the tracker's crop and on a
    hand-drawn box's, each beside the pose of the same crop mirrored (which should flip the
    signs of yaw and roll and keep pitch)."""
    try:
        from skimage.data import astronaut
    except ImportError:
        return {"skipped": "scikit-image not installed"}
    from freeavatar_server.inference.face import FaceFront, crop_face

    img = astronaut()
    tracker = FaceFront(threads=1).track()
    obs = None
    for _ in range(30):  # a still photo streamed for one second
        obs = tracker.update(img)
    boxes = {"hand_box": ASTRONAUT_BOX} | ({"tracked_box": obs.box} if obs is not None else {})
    out = {}
    for name, box in boxes.items():
        crop = crop_face(img, box, estimator.size)
        for suffix, c in (("", crop), ("_mirrored", np.ascontiguousarray(crop[:, ::-1]))):
            pose = estimator.estimate(c[None])[0]
            out[name + suffix] = {a: round(float(v), 1) for a, v in zip(AXES, pose, strict=True)}
    return out


def bench_live_stages(seconds: float) -> dict:
    import asyncio
    import tempfile
    from pathlib import Path

    from freeavatar import AsyncClient
    from freeavatar_server.media import encode_jpeg
    from freeavatar_server.tools.bench import (
        ServerProcess,
        builtin_avatar_ids,
        clip_frames,
        run_load,
    )

    async def run() -> dict:
        jpegs = [encode_jpeg(f) for f in clip_frames(2.0, 30.0)]
        with tempfile.TemporaryDirectory() as data_dir:
            server = ServerProcess(Path(data_dir))
            try:
                address = f"127.0.0.1:{server.port}"
                async with AsyncClient(address) as client:
                    ids = await builtin_avatar_ids(client)
                load = await run_load(address, jpegs, 1, ids, 30.0, seconds)
                async with AsyncClient(address) as client:
                    stats = await client.get_stats()
            finally:
                server.stop()
        stages = {s.name: {"p50_ms": round(s.p50_ms, 3), "p99_ms": round(s.p99_ms, 3)} for s in stats.stages}
        return {"latency_ms": load.latency_ms, "stages": stages}  # fmt: skip

    return asyncio.run(run())


def main() -> None:
    import cv2
    import torch

    from freeavatar_server.inference.face.pose import DEFAULT_MODEL, HeadPoseEstimator
    from freeavatar_server.training.face.pose_train import held_out

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--faces", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=512)
    ap.add_argument("--clip-seconds", type=float, default=6.0)
    ap.add_argument("--live-seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    estimator = HeadPoseEstimator(threads=1)
    faces = held_out("faces", args.faces, estimator.size)
    frames = held_out("frames", args.frames, estimator.size)
    crop = faces.crops[:1]
    for _ in range(50):
        estimator.estimate(crop)
    ms = []
    for i in range(2000):
        crop = faces.crops[i % len(faces.crops)][None]
        t = time.perf_counter()
        estimator.estimate(crop)
        ms.append((time.perf_counter() - t) * 1000)
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1,
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "model": {"path": DEFAULT_MODEL.name, "kb": round(DEFAULT_MODEL.stat().st_size / 1024, 1)},
        "held_out_render_faces": errors(estimator.estimate(faces.crops), faces.poses),
        "held_out_pipeline_crops": errors(estimator.estimate(frames.crops), frames.poses),
        "tracked_clip_640x480": bench_clip(estimator, args.clip_seconds, seed=987),
        "astronaut": bench_astronaut(estimator),
        "estimate_one_crop": timings(ms),
    }  # fmt: skip
    if args.live_seconds > 0:
        result["live_server"] = bench_live_stages(args.live_seconds)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
