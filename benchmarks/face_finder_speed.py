"""Face finder: speed and accuracy of the shipped localiser, the tracker and crop_face.

    python benchmarks/face_finder_speed.py [--frames 500] [--clip-seconds 6] [--json]

One thread everywhere (torch for the synthetic renderer, ONNX Runtime, OpenCV), as the
streaming server runs it. Held-out frames use seeds far from the training shards'.
Prints one JSON object (with --json) or a readable summary. Results: docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

# Training shards use seeds 0..~400 (one per 64-frame shard); these never collide.
HELD_OUT_SEED = 987_654_321
ASTRONAUT_BOX = np.array([175.0, 66.0, 275.0, 176.0])  # by hand: forehead-chin, cheek-cheek


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(union - inter, 1e-9)


def timings(ms: list[float]) -> dict[str, float]:
    a = np.sort(np.asarray(ms))
    return {
        "mean_ms": round(float(a.mean()), 3),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "n": len(a),
    }


def held_out_frames(n: int, seed: int):  # -> FaceBatch
    from freeavatar_server.synth.actors import render_frames, sample_expressions

    rng = np.random.default_rng(seed)
    return render_frames(
        sample_expressions(n, rng), rng.integers(0, 2**62, n), seed=seed, width=640, height=480
    )


def edge_frames(n: int, seed: int):  # -> FaceBatch
    """Faces cut by a random frame edge, 55-90% of the face box inside the picture."""
    from freeavatar_server.synth.actors import render_frames, sample_expressions

    rng = np.random.default_rng(seed)
    w = rng.uniform(0.2, 0.4, n) * 480
    h = 1.1 * w
    cx, cy = rng.uniform(w, 640 - w), rng.uniform(h, 480 - h)
    inside, edge = rng.uniform(0.55, 0.9, n), rng.integers(4, size=n)
    cx = np.where(edge == 0, -w / 2 + inside * w, np.where(edge == 1, 640 + w / 2 - inside * w, cx))
    cy = np.where(edge == 2, -h / 2 + inside * h, np.where(edge == 3, 480 + h / 2 - inside * h, cy))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return render_frames(
        sample_expressions(n, rng), rng.integers(0, 2**62, n), seed=seed, face_boxes=boxes
    )


def no_face_frames(n: int, seed: int) -> np.ndarray:
    """Cluttered rooms with the person placed far outside the picture, plus flat frames."""
    from freeavatar_server.synth.actors import render_frames, sample_expressions

    rng = np.random.default_rng(seed)
    boxes = np.tile(np.array([[-3000.0, 100.0, -2900.0, 230.0]]), (n, 1))
    batch = render_frames(
        sample_expressions(n, rng), rng.integers(0, 2**62, n), seed=seed, face_boxes=boxes
    )
    flats = np.stack([np.full((480, 640, 3), v, np.uint8) for v in (0, 128, 255)])
    return np.concatenate([batch.images, flats])


def bench_detection(loc, frames, boxes) -> dict:
    ms, conf, pred = [], [], []
    for im in frames:
        t = time.perf_counter()
        det = loc.detect(im)
        ms.append((time.perf_counter() - t) * 1000)
        conf.append(det.confidence)
        pred.append(det.box)
    iou = box_iou(np.stack(pred), boxes)
    conf = np.asarray(conf)
    w = boxes[:, 2] - boxes[:, 0]
    found = (conf >= 0.5) & (iou > 0.5)
    by_size = {}
    for lo, hi in ((0, 96), (96, 160), (160, 1e9)):
        sel = (w >= lo) & (w < hi)
        if sel.any():
            by_size[f"width_{int(lo)}_{int(min(hi, 9999))}px"] = {
                "n": int(sel.sum()), "recall_iou50": round(float(found[sel].mean()), 4),
            }  # fmt: skip
    return {
        "n": len(frames),
        "recall_iou50": round(float(found.mean()), 4),
        "mean_iou": round(float(iou.mean()), 4),
        "median_iou": round(float(np.median(iou)), 4),
        "by_face_width": by_size,
        "time": timings(ms),
    }


def bench_window(loc, frames, boxes) -> dict:
    from freeavatar_server.inference.face.tracker import window_around

    ms, ious = [], []
    rng = np.random.default_rng(1)
    for im, b in zip(frames, boxes, strict=True):
        w = b[2] - b[0]
        prev = b + rng.normal(0, 0.08 * w, 4)  # last frame's box, one frame of motion ago
        t = time.perf_counter()
        det = loc.detect_in_window(im, window_around(prev, 2.5))
        ms.append((time.perf_counter() - t) * 1000)
        ious.append(float(box_iou(det.box, b)[0]) if det.confidence >= 0.3 else 0.0)
    ious = np.asarray(ious)
    return {
        "recall_iou50": round(float((ious > 0.5).mean()), 4),
        "mean_iou": round(float(ious.mean()), 4),
        "time": timings(ms),
    }


def bench_clip(loc, seconds: float, seed: int) -> dict:
    from freeavatar_server.inference.face.tracker import FaceTracker
    from freeavatar_server.synth.video import make_trajectory, render_trajectory_frames

    traj = make_trajectory(seconds, 30.0, seed=seed)
    batch = render_trajectory_frames(traj, 0, traj.n_frames)
    tracker = FaceTracker(loc)
    ms, raw, smooth, sources = [], [], [], []
    for i, im in enumerate(batch.images):
        t = time.perf_counter()
        obs = tracker.update(im, timestamp=i / traj.fps)
        ms.append((time.perf_counter() - t) * 1000)
        if obs is None:
            raw.append(np.full(4, np.nan))
            smooth.append(np.full(4, np.nan))
            sources.append("none")
        else:
            raw.append(np.array(obs.raw_box))
            smooth.append(np.array(obs.box))
            sources.append(obs.source)
    raw, smooth, gt = np.stack(raw), np.stack(smooth), batch.boxes
    ok = ~np.isnan(raw[:, 0])
    iou_raw = np.where(ok, box_iou(np.nan_to_num(raw), gt), 0.0)
    iou_smooth = np.where(ok, box_iou(np.nan_to_num(smooth), gt), 0.0)

    def jitter(b: np.ndarray) -> float:
        # frame-to-frame wobble: the centre's second difference minus the truth's, in face widths
        c = (b[:, :2] + b[:, 2:]) / 2
        g = (gt[:, :2] + gt[:, 2:]) / 2
        d2 = np.diff(c - g, n=2, axis=0)
        return float(np.nanmean(np.linalg.norm(d2, axis=1) / (gt[2:, 2] - gt[2:, 0])))

    by_source = {s: timings([m for m, q in zip(ms, sources, strict=True) if q == s])
                 for s in sorted(set(sources))}  # fmt: skip
    return {
        "frames": int(traj.n_frames),
        "found_rate": round(float(ok.mean()), 4),
        "iou50_rate": round(float((iou_smooth > 0.5).mean()), 4),
        "mean_iou_smoothed": round(float(iou_smooth.mean()), 4),
        "mean_iou_raw": round(float(iou_raw.mean()), 4),
        "jitter_raw_face_widths": round(jitter(raw), 5),
        "jitter_smoothed_face_widths": round(jitter(smooth), 5),
        "update_time": timings(ms),
        "update_time_by_source": by_source,
    }


def bench_astronaut(loc) -> dict:
    try:
        from skimage.data import astronaut
    except ImportError:
        return {"skipped": "scikit-image not installed"}
    from freeavatar_server.inference.face.tracker import FaceTracker

    img = astronaut()
    det = loc.detect(img)
    tracker = FaceTracker(loc)
    ms, obs = [], None
    for i in range(30):  # a still photo streamed for one second
        t = time.perf_counter()
        obs = tracker.update(img, timestamp=i / 30)
        ms.append((time.perf_counter() - t) * 1000)
    return {
        "learned_confidence": round(det.confidence, 4),
        "learned_iou": round(float(box_iou(det.box, ASTRONAUT_BOX)[0]), 4),
        "tracker_found": obs is not None,
        "tracker_source": None if obs is None else obs.source,
        "tracker_iou": None if obs is None else round(float(box_iou(np.array(obs.box), ASTRONAUT_BOX)[0]), 4),
        "update_time": timings(ms),
    }  # fmt: skip


def bench_haar(frames) -> dict:
    from freeavatar_server.inference.face.haar import HaarFaceFinder

    haar = HaarFaceFinder()
    ms = []
    for im in frames:
        t = time.perf_counter()
        haar.detect(im)
        ms.append((time.perf_counter() - t) * 1000)
    return {"full_frame_time": timings(ms)}


def bench_crop(n: int = 16) -> dict:
    from freeavatar_server.inference.face.crop import crop_face
    from freeavatar_server.synth.actors import render_faces, render_frames, sample_expressions

    rng = np.random.default_rng(5)
    expr, ids = sample_expressions(n, rng), rng.integers(0, 10**9, n)
    out = {}
    poses = {"frontal": np.zeros((n, 3), np.float32),
             "random_pose": (rng.uniform(-1, 1, (n, 3)) * [30, 20, 20]).astype(np.float32)}  # fmt: skip
    for name, pose in poses.items():
        frames = render_frames(expr, ids, poses=pose, nuisance=False, seed=11)
        faces = render_faces(expr, ids, poses=pose, nuisance=False, size=128)
        diffs = []
        for im, box, ref, rbox in zip(
            frames.images, frames.boxes, faces.images, faces.boxes, strict=True
        ):
            crop = crop_face(im, box, 128).astype(np.float64)
            x0, y0, x1, y1 = (int(round(v)) for v in rbox)
            sl = (slice(max(y0, 0), y1), slice(max(x0, 0), x1))
            diffs.append(float(np.abs(crop[sl] - ref[sl]).mean()))
        out[name] = {"face_region_mean_abs_diff": round(float(np.mean(diffs)), 2),
                     "worst": round(float(np.max(diffs)), 2)}  # fmt: skip
    ms = []
    for _ in range(5):
        for im, box in zip(frames.images, frames.boxes, strict=True):
            t = time.perf_counter()
            crop_face(im, box, 128)
            ms.append((time.perf_counter() - t) * 1000)
    out["time_128px"] = timings(ms)
    return out


def main() -> None:
    import cv2
    import torch

    from freeavatar_server.inference.face.localiser import DEFAULT_MODEL, FaceLocaliser

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--clip-seconds", type=float, default=6.0)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    loc = FaceLocaliser(args.model, threads=1)
    held = held_out_frames(args.frames, HELD_OUT_SEED)
    edges = edge_frames(max(args.frames // 5, 20), HELD_OUT_SEED + 2)
    empty = no_face_frames(max(args.frames // 5, 20), HELD_OUT_SEED + 1)
    empty_conf = np.array([loc.detect(im).confidence for im in empty])
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1,
                    "load_average_1min": round(__import__("os").getloadavg()[0], 2)},
        "model": {"path": args.model.name, "kb": round(args.model.stat().st_size / 1024, 1)},
        "detection_640x480": bench_detection(loc, held.images, held.boxes),
        "edge_faces_640x480": bench_detection(loc, edges.images, edges.boxes),
        "no_face": {"n": len(empty), "false_positive_rate": round(float((empty_conf >= 0.5).mean()), 4),
                    "max_confidence": round(float(empty_conf.max()), 4)},
        "window_step": bench_window(loc, held.images, held.boxes),
        "tracking_clip": bench_clip(loc, args.clip_seconds, seed=HELD_OUT_SEED % 1000),
        "astronaut": bench_astronaut(loc),
        "haar_640x480": bench_haar(held.images[:20]),
        "crop_face_vs_render_faces": bench_crop(),
    }  # fmt: skip
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
