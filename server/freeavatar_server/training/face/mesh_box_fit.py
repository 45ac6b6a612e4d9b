"""Fit the map from MediaPipe's mesh to the synthetic world's face box (`inference.face.front`):
least squares in the eye frame, on synthetic training faces, scored on held-out identities.

    python -m freeavatar_server.training.face.mesh_box_fit [--train 500] [--test 300] [--ship]

Faces the front end does not find are left out of both sets (the map is only ever used on a
found face). `--ship` writes models/mesh_face_box.npz.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np

from freeavatar_server.inference.face.front import (
    LocaliserProposal,
    MeshFaceBox,
    box_features,
    eye_frame,
)
from freeavatar_server.inference.face.localiser import FaceLocaliser
from freeavatar_server.inference.face_landmarker import FaceLandmarker, FaceTrack
from freeavatar_server.inference.shipped import MESH_FACE_BOX
from freeavatar_server.synth.actors import render_frames, sample_expressions
from freeavatar_server.training.face.pose_train import HELD_OUT_IDENTITY

TRAIN_SEED, TEST_SEED = 41_000_000, 42_000_000  # apart from every other face set's seeds


@dataclass(frozen=True)
class MeshBoxSet:
    landmarks: np.ndarray  # (N, 478, 3)
    boxes: np.ndarray  # (N, 4) the true face boxes
    found: float  # share of the rendered faces the front end found


def collect(landmarker: FaceLandmarker, proposal: LocaliserProposal, n: int, held_out: bool, seed: int, chunk: int = 32) -> MeshBoxSet:
    """Render n synthetic frames and read each with a fresh track (a still: detector, then mesh)."""
    rng = np.random.default_rng(seed)
    low = HELD_OUT_IDENTITY if held_out else 0
    ids = rng.integers(low, low + 1_000_000, n)
    expressions, seeds = sample_expressions(n, rng), rng.integers(0, 2**62, n)
    landmarks, boxes = [], []
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        batch = render_frames(expressions[part], ids[part], sample_seeds=seeds[part])
        for image, box in zip(batch.images, batch.boxes, strict=True):
            face = FaceTrack(landmarker, second_detector=proposal).update(image)
            if face is None:
                continue
            centre = face.landmarks[:, :2].mean(0)
            if box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3]:
                landmarks.append(face.landmarks)
                boxes.append(box)
    return MeshBoxSet(np.array(landmarks), np.array(boxes, np.float64), len(boxes) / n)


def fit(faces: MeshBoxSet) -> MeshFaceBox:
    features = np.stack([box_features(lm) for lm in faces.landmarks])
    targets = []
    for lm, box in zip(faces.landmarks, faces.boxes, strict=True):
        centre, scale = eye_frame(lm)
        targets.append(np.concatenate([(box[:2] - centre) / scale, (box[2:] - centre) / scale]))
    weights, *_ = np.linalg.lstsq(features, np.array(targets), rcond=None)
    return MeshFaceBox(weights)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    low, high = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = np.prod(a[:, 2:] - a[:, :2], axis=1) + np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area - inter)


def score(face_box: MeshFaceBox, faces: MeshBoxSet) -> dict[str, float]:
    predicted = np.stack([face_box.box(lm) for lm in faces.landmarks])
    overlap = iou(predicted, faces.boxes)
    width = faces.boxes[:, 2] - faces.boxes[:, 0]
    error = np.abs(predicted - faces.boxes) / width[:, None]
    return {
        "iou_mean": round(float(overlap.mean()), 4),
        "iou_p5": round(float(np.percentile(overlap, 5)), 4),
        "edge_error_in_face_widths": [round(float(e), 4) for e in error.mean(0)],  # x0, y0, x1, y1
        "faces": len(faces.boxes),
        "found": round(faces.found, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=500, help="synthetic training frames")
    parser.add_argument("--test", type=int, default=300, help="held-out frames to score on")
    parser.add_argument("--ship", action="store_true", help=f"write {MESH_FACE_BOX}")
    args = parser.parse_args()
    landmarker, proposal = FaceLandmarker(), LocaliserProposal(FaceLocaliser())
    face_box = fit(collect(landmarker, proposal, args.train, held_out=False, seed=TRAIN_SEED))
    held_out = collect(landmarker, proposal, args.test, held_out=True, seed=TEST_SEED)
    print(json.dumps({"held_out": score(face_box, held_out)}, indent=2))
    if args.ship:
        np.savez(MESH_FACE_BOX, weights=face_box.weights)
        print(f"wrote {MESH_FACE_BOX}")


if __name__ == "__main__":
    main()
