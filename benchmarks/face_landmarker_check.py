"""MediaPipe's Face Landmarker (inference/face_landmarker.py) on held-out synthetic frames.

    python benchmarks/face_landmarker_check.py [--frames 256] [--width 640] [--height 480]
        [--seed 0] [--models-dir DIR] [--pose-model FILE] [--json]

Frames come from the procedural world (`render_frames`: identities >= 1,000,000 and seeds no
training shard uses, faces 12-45% of the frame height wide, anywhere in the frame, with
lighting, clutter, blur, noise and JPEG), each with its ground-truth head pose and action
units. Each frame is a fresh still (detector, then mesh), so every number is per frame with no
tracking help. One thread everywhere. Reports, as one JSON object:

- detection: the share of frames where the landmarker returns the actor's face (the reading's
  centre inside the true face box), by face size;
- head pose on the detected frames: mean absolute error per axis for the mesh's rigid fit and
  for the shipped pose model (`inference.face.pose.HeadPoseEstimator`) on the crop cut from the
  TRUE face box (its best case); the mesh's mean signed error too (a constant offset is a
  difference of "frontal" between MediaPipe's canonical face and the painter's), and its MAE
  with that offset removed;
- per-stage milliseconds (detector, mesh incl. its crop, blendshapes, pose fit);
- Pearson correlations of MediaPipe blendshapes with the action units that drive them, both
  sides where a shape is sided (ARKit's Left is the actor's left, so is the world's _L);
- sidedness: frontal faces with one action unit on one side only (a wink, a half smile), the
  mean Left and Right blendshape for each, to check whose left MediaPipe's Left is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

AXES = ("yaw", "pitch", "roll")
SEED_BASE = 30_000_000  # far from pose_train's training shards (0..) and its EVAL_SEED (10M)

# (blendshape, action unit) pairs
PAIRS = [
    ("eyeBlinkLeft", "blink_L"), ("eyeBlinkLeft", "blink_R"),
    ("eyeBlinkRight", "blink_R"), ("eyeBlinkRight", "blink_L"),
    ("mouthSmileLeft", "lip_corner_pull_L"), ("mouthSmileLeft", "lip_corner_pull_R"),
    ("mouthSmileRight", "lip_corner_pull_R"), ("mouthSmileRight", "lip_corner_pull_L"),
    ("jawOpen", "jaw_drop"), ("jawOpen", "lips_part"),
    ("mouthFrownLeft", "lip_corner_depress_L"), ("mouthFrownRight", "lip_corner_depress_R"),
    ("browInnerUp", "brow_inner_raise"), ("browDownLeft", "brow_lower"),
    ("browOuterUpLeft", "brow_outer_raise_L"), ("browOuterUpRight", "brow_outer_raise_R"),
    ("eyeWideLeft", "upper_lid_raise"), ("eyeSquintLeft", "lid_tighten"),
    ("cheekSquintLeft", "cheek_raise"), ("noseSneerLeft", "nose_wrinkle"),
    ("mouthPucker", "lip_pucker"), ("mouthFunnel", "lip_pucker"), ("cheekPuff", "cheek_puff"),
    ("mouthStretchLeft", "lip_stretch"), ("mouthPressLeft", "lip_press"),
    ("mouthShrugLower", "chin_raise"), ("mouthUpperUpLeft", "upper_lip_raise"),
    ("jawLeft", "jaw_sideways_L"), ("jawRight", "jaw_sideways_R"),
]  # fmt: skip


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms) if ms else np.zeros(1)
    return {"p50_ms": round(float(np.median(a)), 3), "mean_ms": round(float(a.mean()), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "n": len(ms)}  # fmt: skip


def mae(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    e = np.abs(pred - truth).mean(0) if len(truth) else np.full(3, np.nan)
    return {a: round(float(v), 2) for a, v in zip(AXES, e, strict=True)}


def corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 3)


def sidedness(lm, render_frames, n: int, seed: int, width: int, height: int) -> dict:
    """Mean (Left, Right) blendshape over n frontal faces with one sided AU at 0.9."""
    from freeavatar.arkit import ARKIT_BLENDSHAPES
    from freeavatar_server.inference.face_landmarker import FaceTrack
    from freeavatar_server.synth.actors import AU_INDEX, N_AU
    from freeavatar_server.training.face.pose_train import HELD_OUT_IDENTITY

    rng = np.random.default_rng(seed)
    ids = rng.integers(HELD_OUT_IDENTITY, 2**31, n)
    side = 0.3 * width
    box = np.tile([(width - side) / 2, (height - 1.35 * side) / 2, (width + side) / 2, (height + 1.35 * side) / 2], (n, 1))
    out = {}
    for au, shape in (("blink_L", "eyeBlink"), ("blink_R", "eyeBlink"),
                      ("lip_corner_pull_L", "mouthSmile"), ("lip_corner_pull_R", "mouthSmile")):  # fmt: skip
        expr = np.zeros((n, N_AU), np.float32)
        expr[:, AU_INDEX[au]] = 0.9
        batch = render_frames(expr, ids, width=width, height=height, face_boxes=box,
                              poses=np.zeros((n, 3), np.float32), seed=seed)  # fmt: skip
        left, right = [], []
        for image in batch.images:
            reading = FaceTrack(lm).update(image)
            if reading is not None:
                left.append(reading.blendshapes[ARKIT_BLENDSHAPES.index(shape + "Left")])
                right.append(reading.blendshapes[ARKIT_BLENDSHAPES.index(shape + "Right")])
        out[au] = {f"{shape}Left": round(float(np.mean(left)), 3) if left else None,
                   f"{shape}Right": round(float(np.mean(right)), 3) if right else None, "n": len(left)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--seed", type=int, default=0, help="offset added to the held-out seed")
    ap.add_argument("--chunk", type=int, default=16, help="frames rendered per call")
    ap.add_argument("--models-dir", type=Path, default=None, help="MediaPipe ONNX folder (default: shipped)")
    ap.add_argument("--pose-model", type=Path, default=None, help="head_pose.onnx (default: shipped)")
    ap.add_argument("--sided", type=int, default=16, help="faces per one-sided expression (0 skips)")
    ap.add_argument("--json", action="store_true", help="one line")
    args = ap.parse_args()

    import cv2
    import torch

    from freeavatar.arkit import ARKIT_BLENDSHAPES
    from freeavatar_server.inference.face import crop_face
    from freeavatar_server.inference.face.pose import HeadPoseEstimator
    from freeavatar_server.inference.face_landmarker import (
        FaceLandmarker,
        FaceReading,
        roi_from_detection,
    )
    from freeavatar_server.synth.actors import AU_INDEX, render_frames, sample_expressions
    from freeavatar_server.training.face.pose_train import HELD_OUT_IDENTITY

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    lm = FaceLandmarker(args.models_dir, threads=1)
    pose_model = HeadPoseEstimator(args.pose_model, threads=1)

    seed = SEED_BASE + args.seed
    rng = np.random.default_rng(seed)
    ids = rng.integers(HELD_OUT_IDENTITY, 2**31, args.frames)
    expr = sample_expressions(args.frames, rng)
    seeds = rng.integers(0, 2**62, args.frames)

    ms: dict[str, list[float]] = {"detector": [], "mesh": [], "blendshapes": [], "pose_fit": [],
                                  "pose_model": [], "render": []}  # fmt: skip
    found, size_frac = [], []
    mesh_pose, model_pose, truth_pose, bs_rows, au_rows = [], [], [], [], []
    for start in range(0, args.frames, args.chunk):
        sl = slice(start, min(start + args.chunk, args.frames))
        t = time.perf_counter()
        batch = render_frames(expr[sl], ids[sl], width=args.width, height=args.height, sample_seeds=seeds[sl])
        ms["render"].append((time.perf_counter() - t) * 1000 / len(batch))
        for image, box, pose, aus in zip(batch.images, batch.boxes, batch.poses, batch.expressions, strict=True):
            size_frac.append(float(box[2] - box[0]) / args.width)
            t = time.perf_counter()
            dets = lm.detect(image)
            ms["detector"].append((time.perf_counter() - t) * 1000)
            reading: FaceReading | None = None
            if dets:
                best = max(dets, key=lambda d: (d.area, d.score))
                t = time.perf_counter()
                mesh = lm.run_mesh(image, roi_from_detection(best))
                ms["mesh"].append((time.perf_counter() - t) * 1000)
                if mesh.presence >= 0.5:
                    t = time.perf_counter()
                    bs = lm.blendshapes(mesh.landmarks, mesh.tongue_out)
                    ms["blendshapes"].append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    hp = lm.head_pose(mesh.landmarks)
                    ms["pose_fit"].append((time.perf_counter() - t) * 1000)
                    lo, hi = mesh.landmarks[:, :2].min(0), mesh.landmarks[:, :2].max(0)
                    reading = FaceReading(np.concatenate([lo, hi]), mesh.presence, mesh.landmarks, bs,
                                          lm.canonical, roi_from_detection(best), True)  # fmt: skip
            centre = None if reading is None else (reading.box[:2] + reading.box[2:]) / 2
            hit = centre is not None and bool(box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3])
            found.append(hit)
            if not hit:
                continue
            crop = crop_face(image, box, pose_model.size)
            t = time.perf_counter()
            model_pose.append(pose_model.estimate(crop[None])[0])
            ms["pose_model"].append((time.perf_counter() - t) * 1000)
            mesh_pose.append(hp)
            truth_pose.append(pose)
            bs_rows.append(reading.blendshapes)
            au_rows.append(aus)

    found_a, frac = np.array(found), np.array(size_frac)
    by_size = {}
    for lo, hi in ((0.0, 0.12), (0.12, 0.2), (0.2, 0.3), (0.3, 1.0)):
        sel = (frac >= lo) & (frac < hi)
        if sel.any():
            by_size[f"face_width_{lo:.2f}-{hi:.2f}_of_frame"] = {"rate": round(float(found_a[sel].mean()), 3),
                                                                  "n": int(sel.sum())}  # fmt: skip
    truth, mp_pose, nn_pose = np.array(truth_pose), np.array(mesh_pose), np.array(model_pose)
    bias = (mp_pose - truth).mean(0) if len(truth) else np.zeros(3)
    bs_a, au_a = np.array(bs_rows), np.array(au_rows)
    correlations = {}
    if len(bs_a):
        for shape, au in PAIRS:
            correlations[f"{shape}~{au}"] = corr(bs_a[:, ARKIT_BLENDSHAPES.index(shape)], au_a[:, AU_INDEX[au]])
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1,
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "frames": {"n": args.frames, "size": [args.width, args.height], "seed": seed,
                   "face_width_of_frame": [round(float(frac.min()), 3), round(float(frac.max()), 3)]},
        "detection": {"rate": round(float(found_a.mean()), 3), "by_face_size": by_size},
        "head_pose_on_detected": {
            "n": len(truth),
            "mesh_mae_deg": mae(mp_pose, truth),
            "mesh_mean_signed_error_deg": {a: round(float(v), 2) for a, v in zip(AXES, bias, strict=True)},
            "mesh_mae_offset_removed_deg": mae(mp_pose - bias, truth),
            "pose_model_on_true_box_mae_deg": mae(nn_pose, truth),
            "zero_predictor_mae_deg": mae(np.zeros_like(truth), truth),
            "mesh_correlation": {a: corr(mp_pose[:, k], truth[:, k]) for k, a in enumerate(AXES)} if len(truth) else {},
            "pose_model_correlation": {a: corr(nn_pose[:, k], truth[:, k]) for k, a in enumerate(AXES)} if len(truth) else {},
        },
        "ms_one_thread": {k: stats(v) for k, v in ms.items()},
        "blendshape_au_correlation": correlations,
    }  # fmt: skip
    if args.sided > 0:
        result["sidedness_frontal"] = sidedness(lm, render_frames, args.sided, seed + 1, args.width, args.height)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
