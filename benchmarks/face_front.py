"""The live path's face front end (`inference.face.front`) on held-out synthetic faces, as the
server runs it: MediaPipe's mesh tracking the face, the localiser as the second detector, the
face box for the encoder's crop, and head pose (the shipped pose CNN on that crop, beside the
mesh's own rigid fit).

    python benchmarks/face_front.py [--stills 300] [--clips 6] [--seconds 4] [--json]

- stills: each frame read by a fresh track (detector, then mesh), so nothing helps it;
- clips: synthetic actors moving and emoting (`synth.video`), read as a stream, once with the
  mesh every frame and once at the server's default rate cap (15 runs per second at 30 fps).
A face counts as found when the mesh's centre lies inside the true face box. One thread.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import torch

from freeavatar_server.inference.face import FaceFront, HeadPoseEstimator, crop_face
from freeavatar_server.synth.actors import render_frames, sample_expressions
from freeavatar_server.synth.video import make_trajectory, render_trajectory_frames
from freeavatar_server.training.face.mesh_box_fit import TEST_SEED, iou
from freeavatar_server.training.face.pose_train import HELD_OUT_IDENTITY

AXES = ("yaw", "pitch", "roll")
CLIP_SEED = 43_000_000


def inside(face, box: np.ndarray) -> bool:
    centre = face.landmarks[:, :2].mean(0)
    return bool(box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3])


def mae(pred: list, truth: list) -> dict[str, float]:
    error = np.abs(np.array(pred) - np.array(truth)).mean(0)
    return {a: round(float(e), 2) for a, e in zip(AXES, error, strict=True)}


def stills(front: FaceFront, pose: HeadPoseEstimator, n: int) -> dict[str, object]:
    rng = np.random.default_rng(TEST_SEED + 1)
    ids = rng.integers(HELD_OUT_IDENTITY, HELD_OUT_IDENTITY + 1_000_000, n)
    expressions, seeds = sample_expressions(n, rng), rng.integers(0, 2**62, n)
    found, boxes, truth, cnn, mesh = [], [], [], [], []
    for start in range(0, n, 32):
        batch = render_frames(expressions[start : start + 32], ids[start : start + 32], sample_seeds=seeds[start : start + 32])
        for image, box, true_pose in zip(batch.images, batch.boxes, batch.poses, strict=True):
            face = front.track().update(image)
            hit = face is not None and inside(face, box)
            found.append(hit)
            if hit:
                boxes.append((face.box, box))
                truth.append(true_pose)
                cnn.append(pose.estimate(crop_face(image, face.box, pose.size)[None])[0])
                mesh.append(front.landmarker.head_pose(face.landmarks))
    overlap = iou(np.array([b[0] for b in boxes]), np.array([b[1] for b in boxes]))
    return {
        "frames": n,
        "found": round(float(np.mean(found)), 4),
        "face_box_iou_mean": round(float(overlap.mean()), 3),
        "head_pose_mae_deg": {"pose_cnn_on_front_box": mae(cnn, truth), "mesh_rigid_fit": mae(mesh, truth)},
    }


def clips(front: FaceFront, pose: HeadPoseEstimator, count: int, seconds: float, rate_hz: float) -> dict[str, object]:
    found, truth, cnn, spent = [], [], [], []
    for index in range(count):
        trajectory = make_trajectory(seconds, 30.0, seed=CLIP_SEED + index)
        track = front.track(1.0 / rate_hz if rate_hz else 0.0)
        for start in range(0, trajectory.n_frames, 16):
            batch = render_trajectory_frames(trajectory, start, min(start + 16, trajectory.n_frames))
            for k, (image, box, true_pose) in enumerate(zip(batch.images, batch.boxes, batch.poses, strict=True)):
                began = time.perf_counter()
                face = track.update(image, (start + k) / trajectory.fps)
                spent.append((time.perf_counter() - began) * 1000)
                hit = face is not None and inside(face, box)
                found.append(hit)
                if hit:
                    truth.append(true_pose)
                    cnn.append(pose.estimate(crop_face(image, face.box, pose.size)[None])[0])
    return {
        "mesh_rate_hz": rate_hz or 30.0,
        "frames": len(found),
        "found": round(float(np.mean(found)), 4),
        "head_pose_mae_deg": mae(cnn, truth),
        "front_end_ms": {"p50": round(float(np.median(spent)), 2), "mean": round(float(np.mean(spent)), 2),
                         "p99": round(float(np.percentile(spent, 99)), 2)},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stills", type=int, default=300)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--json", action="store_true", help="one line")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    front, pose = FaceFront(threads=1), HeadPoseEstimator(threads=1)
    front.warm_up()
    result = {
        "stills": stills(front, pose, args.stills),
        "clips_every_frame": clips(front, pose, args.clips, args.seconds, 0.0),
        "clips_at_15_hz": clips(front, pose, args.clips, args.seconds, 15.0),
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
