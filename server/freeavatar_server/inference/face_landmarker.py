"""MediaPipe's Face Landmarker v2 on ONNX Runtime: the real-face front end.

Three graphs from MediaPipe's `face_landmarker.task`, converted by `scripts/fetch_mediapipe.py`
and shipped in `models/mediapipe/` (Apache-2.0, see the LICENSE, NOTICE and README there):

* `face_detector.onnx`: BlazeFace short range, 128x128 letterboxed frame in [-1, 1] -> 896 SSD
  anchors (box + 6 keypoints, one logit each);
* `face_landmarks.onnx`: the 478-point mesh with irises, on a 256x256 crop in [0, 1] of a square
  region rotated so the eyes are level, 1.5x the face -> landmarks in crop pixels (x, y, and z
  in the same units), a face-presence logit and a tongue-out score;
* `face_blendshapes.onnx`: 146 of the 478 points, in frame pixels -> 52 scores (MediaPipe's
  `_neutral` first, 51 ARKit shapes in alphabetical order; `tongueOut` is not among them).

Pre- and post-processing follow MediaPipe's own graph (mediapipe/tasks/cc/vision/
face_landmarker, face_detector and face_blendshapes_graph.cc): the same anchors, sigmoid score
threshold 0.5, weighted non-maximum suppression at IoU 0.5, the region of interest from the
detection (eye keypoints 0 -> 1 give the rotation, box scaled 1.5) or, while tracking, from the
previous frame's landmarks (their bounding box, eye corners 33 -> 263 for the rotation, square,
scaled 1.5), presence threshold 0.5, and the blendshapes' landmark subset. Two deliberate
differences: when the tracked face is lost `FaceTrack` re-runs the detector on the same frame
(MediaPipe waits for the next one), and with several faces it keeps the largest (MediaPipe keeps
the highest-scoring). A `SecondDetector` may propose a region when BlazeFace finds no face the
mesh confirms (only its largest face is tried): the bundle has only the short-range BlazeFace, which misses faces under about a seventh of the
frame's width (the live path asks its own localiser, `inference.face.front`). No landmark
smoothing here: the live pipeline smooths its own outputs.

Everything is in frame pixels of the RGB uint8 frame passed in. Head pose is a weighted rigid
fit (MediaPipe's Procrustes landmark weights) of the mesh to MediaPipe's canonical face, in the
product's convention (proto/freeavatar/v1/rig.proto `HeadPose`, as `inference.face.pose`):
+yaw the face turns towards the image's right, +pitch it tilts up, +roll the head rotates
clockwise in the image; degrees.

    landmarker = FaceLandmarker()                  # shipped models, one thread
    track = FaceTrack(landmarker)                  # one per actor stream
    reading = track.update(frame)                  # (H, W, 3) uint8 RGB -> FaceReading | None
    if reading is not None:
        reading.blendshapes                        # (52,) in freeavatar.arkit.ARKIT_BLENDSHAPES order
        reading.head_pose                          # yaw, pitch, roll degrees
        crop = align_face(frame, reading.landmarks, 128)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.inference.onnx import open_session
from freeavatar_server.inference.shipped import MEDIAPIPE_DIR

# ---------------------------------------------------------------------------------------------
# constants from MediaPipe's graph

DETECTOR_SIZE = 128
MESH_SIZE = 256
MIN_DETECTION_SCORE = 0.5  # FaceDetectorGraphOptions.min_detection_confidence
NMS_IOU = 0.5  # FaceDetectorGraphOptions.min_suppression_threshold
MIN_PRESENCE = 0.5  # FaceLandmarksDetectorGraphOptions.min_detection_confidence
ROI_SCALE = 1.5  # RectTransformationCalculator scale_x / scale_y, detection and landmarks alike

# BlazeFace keypoints: the subject's right eye (image left in a frontal view), left eye, nose tip,
# mouth centre, right ear tragion, left ear tragion.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")

# face_blendshapes_graph.cc kLandmarksSubsetIdxs
BLENDSHAPE_LANDMARKS = np.array([
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65,
    66, 67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136,
    144, 145, 146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168,
    172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276,
    282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318,
    321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380,
    381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466,
    468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
])  # fmt: skip

# face_blendshapes_graph.cc kBlendshapeNames: the model's output order
MEDIAPIPE_BLENDSHAPES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip
# ARKit shapes the blendshape model never moves, whatever the face: 0.000 over the real-face
# set, cheekPuff at most 0.002 (google-ai-edge/mediapipe#4436, #4450)
UNREAD_BLENDSHAPES = frozenset({"cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight"})

# mesh landmarks: outer and inner eye corners (subject's right eye, image left; then left eye)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)


def _to_arkit_index() -> tuple[np.ndarray, np.ndarray, int]:
    """(arkit positions, mediapipe positions) of the 51 shared names, and tongueOut's position."""
    pos = {name: i for i, name in enumerate(ARKIT_BLENDSHAPES)}
    pairs = [(pos[n], j) for j, n in enumerate(MEDIAPIPE_BLENDSHAPES) if n != "_neutral"]
    missing = set(MEDIAPIPE_BLENDSHAPES[1:]) - set(pos)
    if missing:  # pragma: no cover - a renamed ARKit list would be a bug worth failing loudly on
        raise RuntimeError(f"MediaPipe blendshapes with no ARKit name: {sorted(missing)}")
    dst, src = (np.array(v) for v in zip(*pairs, strict=True))
    return dst, src, pos["tongueOut"]


# ---------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class FaceDetection:
    """One BlazeFace detection in frame pixels."""

    box: np.ndarray  # (4,) float32 x0, y0, x1, y1
    keypoints: np.ndarray  # (6, 2) float32, in KEYPOINT_NAMES order
    score: float

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


@dataclass(frozen=True)
class FaceRoi:
    """The square, rotated region the mesh runs on, in frame pixels. `rotation` is MediaPipe's:
    radians, positive when the face is rolled clockwise in the image (the crop undoes it)."""

    center: np.ndarray  # (2,) float
    size: float  # side
    rotation: float

    def crop_to_frame(self, side: int = MESH_SIZE) -> np.ndarray:
        """(2, 3) affine map from crop pixels (side x side) to frame pixels."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        k = self.size / side
        rot = np.array([[c, -s], [s, c]]) * k
        t = self.center - rot @ np.array([side / 2.0, side / 2.0])
        return np.hstack([rot, t[:, None]])


@dataclass(frozen=True)
class FaceMesh:
    """What the mesh model says about one region."""

    landmarks: np.ndarray  # (478, 3) float32 frame pixels; z in x's units, smaller = nearer
    presence: float  # face presence probability in the region
    tongue_out: float  # the mesh's own tongue-out score (MediaPipe's task does not expose it)


@dataclass(frozen=True)
class FaceReading:
    """One tracked face in one frame."""

    box: np.ndarray  # (4,) float32 x0, y0, x1, y1: the landmarks' bounds, frame pixels
    confidence: float  # the mesh's face presence probability
    landmarks: np.ndarray  # (478, 3) float32 frame pixels
    # (52,) float32 in [0, 1], freeavatar.arkit.ARKIT_BLENDSHAPES order; tongueOut is the mesh's
    # tongue-out probability (MediaPipe's blendshape model has no tongueOut)
    blendshapes: np.ndarray
    canonical: CanonicalFace = field(repr=False)  # what head_pose fits the landmarks to
    roi: FaceRoi = field(repr=False)  # the region the mesh ran on
    detected: bool = False  # True when the detector ran for this frame

    @cached_property
    def head_pose(self) -> np.ndarray:
        """(3,) yaw, pitch, roll degrees (product convention): the mesh's rigid fit to the
        canonical face, made when first asked for (0.3 ms; the live path reads the head pose
        with its own model)."""
        return head_pose(self.landmarks, self.canonical)


# ---------------------------------------------------------------------------------------------
# geometry helpers


def _ssd_anchors() -> np.ndarray:
    """(896, 2) anchor centres, normalised: SsdAnchorsCalculator for the short-range model
    (4 layers, strides 8, 16, 16, 16, two anchors per layer and cell, fixed size 1)."""
    strides = (8, 16, 16, 16)
    out: list[np.ndarray] = []
    i = 0
    while i < len(strides):
        stride, per_cell = strides[i], 0
        while i < len(strides) and strides[i] == stride:  # same-stride layers share one grid
            per_cell += 2
            i += 1
        n = DETECTOR_SIZE // stride
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


_ANCHORS = _ssd_anchors()


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-maximum suppression: each cluster (IoU above `iou` with its best
    member) becomes the score-weighted mean of its boxes and keypoints, with the best score."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), dtype=bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        idx = np.flatnonzero(alive)
        members = idx[_iou(boxes[i], boxes[idx]) > iou]
        members = members if len(members) else np.array([i])
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[i])))
        alive[members] = False
        alive[i] = False
    return out


def _rotation(start: np.ndarray, end: np.ndarray) -> float:
    """DetectionsToRectsCalculator::ComputeRotation with target angle 0 (image pixels)."""
    angle = -math.atan2(-(float(end[1]) - float(start[1])), float(end[0]) - float(start[0]))
    return (angle + math.pi) % (2 * math.pi) - math.pi


def roi_from_detection(det: FaceDetection) -> FaceRoi:
    """The face detector graph's expanded rect: the box (square, as BlazeFace's are) scaled 1.5,
    rotated by the eye keypoints."""
    x0, y0, x1, y1 = (float(v) for v in det.box)
    side = max(x1 - x0, y1 - y0) * ROI_SCALE
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return FaceRoi(center, side, _rotation(det.keypoints[0], det.keypoints[1]))


def roi_from_landmarks(landmarks: np.ndarray) -> FaceRoi:
    """The landmarks graph's rect for the next frame: the landmarks' axis-aligned bounds,
    rotated by the outer eye corners (33 -> 263), square on the long side, scaled 1.5."""
    xy = landmarks[:, :2]
    lo, hi = xy.min(0), xy.max(0)
    side = float(max(hi - lo)) * ROI_SCALE
    return FaceRoi((lo + hi) / 2.0, side, _rotation(landmarks[33], landmarks[263]))


# canonical face (MediaPipe's face_geometry metadata, shipped as canonical_face.npz)


@dataclass(frozen=True)
class CanonicalFace:
    vertices: np.ndarray  # (468, 3) cm: x to the viewer's right, y up, z towards the viewer
    procrustes_ids: np.ndarray  # (33,) landmark ids MediaPipe's geometry pipeline fits on
    procrustes_weights: np.ndarray  # (33,)

    @classmethod
    def load(cls, path: Path) -> CanonicalFace:
        with np.load(path) as z:
            return cls(z["vertices"].astype(np.float64), z["procrustes_ids"].astype(np.int64),
                       z["procrustes_weights"].astype(np.float64))  # fmt: skip


def rigid_fit(
    source: np.ndarray, target: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray]:
    """Weighted similarity fit (Umeyama): rotation R (det +1), scale s, translation t minimising
    sum w |s R source + t - target|^2. source, target (N, 3)."""
    w = weights / weights.sum()
    mu_s, mu_t = w @ source, w @ target
    a, b = source - mu_s, target - mu_t
    cov = (b * w[:, None]).T @ a
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / max(w @ (a * a).sum(1), 1e-12))
    return rot, scale, mu_t - scale * rot @ mu_s


def head_pose(landmarks: np.ndarray, canonical: CanonicalFace) -> np.ndarray:
    """(3,) yaw, pitch, roll degrees of the mesh, in the product's convention.

    Both point sets go to one frame: x to the image's right, y down, z towards the camera
    (landmarks: (x, y, -z); canonical: (x, -y, z)). The fitted R maps the canonical face into
    the image; the synthetic world composes image = Roll(roll) . Pitch(pitch)^T . Yaw(yaw)^T .
    canonical (synth/face.py `_coordinates`), so R's last row is (-cos p sin y, sin p,
    cos p cos y) and its second column (-sin r cos p, cos r cos p, .).
    """
    ids = canonical.procrustes_ids
    src = canonical.vertices[ids] * np.array([1.0, -1.0, 1.0])
    dst = landmarks[ids].astype(np.float64) * np.array([1.0, 1.0, -1.0])
    rot, _, _ = rigid_fit(src, dst, canonical.procrustes_weights)
    pitch = math.asin(float(np.clip(rot[2, 1], -1.0, 1.0)))
    yaw = math.atan2(-rot[2, 0], rot[2, 2])
    roll = math.atan2(-rot[0, 1], rot[1, 1])
    return np.degrees(np.array([yaw, pitch, roll])).astype(np.float32)


# alignment for the expression encoder
ALIGN_EYE_Y = 0.38  # eye line height, fraction of the crop side
ALIGN_EYE_DISTANCE = 0.28  # distance between the eye centres (3D, so yaw does not zoom), fraction


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye, image-right eye) centres (3,): the mean of each eye's two corners, so
    gaze does not move them."""
    right = landmarks[list(RIGHT_EYE_CORNERS)].mean(0)  # the subject's right: image left
    left = landmarks[list(LEFT_EYE_CORNERS)].mean(0)
    return right, left


def alignment_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(2, 3) affine map from frame pixels to the aligned crop (see `align_face`)."""
    a, b = eye_centres(np.asarray(landmarks, dtype=np.float64))
    distance = max(float(np.linalg.norm(b - a)), 1e-6)  # 3D: unchanged by yaw
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    k = ALIGN_EYE_DISTANCE * size / distance
    c, s = math.cos(-angle) * k, math.sin(-angle) * k
    mid = (a[:2] + b[:2]) / 2.0
    m = np.array([[c, -s, 0.0], [s, c, 0.0]])
    m[:, 2] = np.array([size / 2.0, ALIGN_EYE_Y * size]) - m[:, :2] @ mid
    return m


def align_face(frame: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8 crop aligned by the mesh: the eye line level at ALIGN_EYE_Y of the
    side, centred, the eye centres ALIGN_EYE_DISTANCE of the side apart (measured in 3D, so a
    turned head keeps its size); edges replicate the frame's border. Same for real and
    synthetic faces."""
    m = alignment_matrix(landmarks, size)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"empty frame {frame.shape}")
    return frame


# ---------------------------------------------------------------------------------------------
# the models


class FaceLandmarker:
    """The three ONNX Runtime sessions and the stateless steps between them. One instance can
    serve every actor (sessions are safe to share across threads); state lives in FaceTrack."""

    def __init__(self, models_dir: Path | None = None, threads: int = 1) -> None:
        root = Path(models_dir) if models_dir is not None else MEDIAPIPE_DIR
        made_by = "scripts/fetch_mediapipe.py"
        self.detector = open_session(root / "face_detector.onnx", threads, "CPUExecutionProvider", made_by=made_by)
        self.mesh = open_session(root / "face_landmarks.onnx", threads, "CPUExecutionProvider", made_by=made_by)
        self.blendshape_model = open_session(root / "face_blendshapes.onnx", threads, "CPUExecutionProvider", made_by=made_by)
        self.canonical = CanonicalFace.load(root / "canonical_face.npz")
        self._arkit_dst, self._mp_src, self._tongue = _to_arkit_index()

    # detector ----------------------------------------------------------------------------
    def detect(self, frame: np.ndarray, min_score: float = MIN_DETECTION_SCORE) -> list[FaceDetection]:
        """Faces in the whole frame, best score first (BlazeFace short range: faces that fill
        roughly a fifth of the frame's long side or more)."""
        frame = _check_frame(frame)
        h, w = frame.shape[:2]
        k = DETECTOR_SIZE / max(h, w)  # letterbox: keep the aspect, pad with black
        pad = np.array([(DETECTOR_SIZE - w * k) / 2, (DETECTOR_SIZE - h * k) / 2])
        m = np.array([[k, 0.0, pad[0]], [0.0, k, pad[1]]])
        img = cv2.warpAffine(frame, m, (DETECTOR_SIZE, DETECTOR_SIZE), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))  # fmt: skip
        x = (img.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        raw, logits = self.detector.run(None, {"image": x})
        raw, logits = raw[0], logits[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
        keep = np.flatnonzero(scores >= min_score)
        if len(keep) == 0:
            return []
        r, a = raw[keep] / DETECTOR_SIZE, _ANCHORS[keep]
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        bw, bh = r[:, 2], r[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
        out = []
        for box, kp, score in weighted_nms(boxes, kps, scores[keep]):
            # tensor (normalised) -> frame pixels: undo the letterbox
            box_px = (box.reshape(2, 2) * DETECTOR_SIZE - pad) / k
            kp_px = (kp * DETECTOR_SIZE - pad) / k
            out.append(FaceDetection(box_px.ravel().astype(np.float32), kp_px.astype(np.float32), score))
        return out

    # mesh --------------------------------------------------------------------------------
    def mesh_crop(self, frame: np.ndarray, roi: FaceRoi) -> np.ndarray:
        """The (256, 256, 3) uint8 crop the mesh sees (edges replicate the frame's border)."""
        m = roi.crop_to_frame(MESH_SIZE)
        return cv2.warpAffine(frame, m, (MESH_SIZE, MESH_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)  # fmt: skip

    def run_mesh(self, frame: np.ndarray, roi: FaceRoi) -> FaceMesh:
        frame = _check_frame(frame)
        crop = self.mesh_crop(frame, roi)
        x = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        pts, presence, tongue = self.mesh.run(None, {"image": x})
        pts = pts.reshape(478, 3).astype(np.float64)
        m = roi.crop_to_frame(MESH_SIZE)
        xy = pts[:, :2] @ m[:, :2].T + m[:, 2]
        z = pts[:, 2] * (roi.size / MESH_SIZE)
        landmarks = np.concatenate([xy, z[:, None]], axis=1).astype(np.float32)
        p = float(1.0 / (1.0 + math.exp(-float(np.clip(presence.ravel()[0], -80, 80)))))
        return FaceMesh(landmarks, p, float(tongue.ravel()[0]))

    def landmarks(self, frame: np.ndarray, roi: FaceRoi) -> tuple[np.ndarray, float]:
        """(478, 3) landmarks in frame pixels and the face presence probability for a region."""
        mesh = self.run_mesh(frame, roi)
        return mesh.landmarks, mesh.presence

    # blendshapes -------------------------------------------------------------------------
    def blendshapes_mediapipe(self, landmarks: np.ndarray) -> np.ndarray:
        """(52,) float32 in MediaPipe's order (MEDIAPIPE_BLENDSHAPES, `_neutral` first)."""
        pts = np.ascontiguousarray(np.asarray(landmarks)[BLENDSHAPE_LANDMARKS, :2], dtype=np.float32)
        return self.blendshape_model.run(None, {"points": pts[None]})[0].reshape(52)

    def blendshapes(self, landmarks: np.ndarray, tongue_out: float = 0.0) -> np.ndarray:
        """(52,) float32 in freeavatar.arkit.ARKIT_BLENDSHAPES order. MediaPipe's model has no
        tongueOut: that slot takes `tongue_out` (the mesh's score; 0 when not given)."""
        mp = self.blendshapes_mediapipe(landmarks)
        out = np.zeros(52, dtype=np.float32)
        out[self._arkit_dst] = mp[self._mp_src]
        out[self._tongue] = tongue_out
        return np.clip(out, 0.0, 1.0)

    def head_pose(self, landmarks: np.ndarray) -> np.ndarray:
        return head_pose(landmarks, self.canonical)

    def read(self, frame: np.ndarray, roi: FaceRoi, detected: bool = False) -> tuple[FaceReading | None, FaceMesh]:
        """Mesh, blendshapes and pose for one region; None when the mesh sees no face."""
        mesh = self.run_mesh(frame, roi)
        if mesh.presence < MIN_PRESENCE:
            return None, mesh
        lm = mesh.landmarks
        box = np.concatenate([lm[:, :2].min(0), lm[:, :2].max(0)]).astype(np.float32)
        reading = FaceReading(
            box=box, confidence=mesh.presence, landmarks=lm,
            blendshapes=self.blendshapes(lm, mesh.tongue_out), canonical=self.canonical,
            roi=roi, detected=detected,
        )  # fmt: skip
        return reading, mesh


# Another detector's proposal of where a face is (None: nowhere), for the mesh to confirm.
SecondDetector = Callable[[np.ndarray], "FaceRoi | None"]


class FaceTrack:
    """One actor stream's tracking state: the detector runs only when there is no face being
    tracked (first frame, or the mesh's presence fell below 0.5); otherwise the region comes from
    the previous frame's landmarks, as MediaPipe's VIDEO mode does. Not thread-safe: one per
    stream."""

    def __init__(self, landmarker: FaceLandmarker, second_detector: SecondDetector | None = None) -> None:
        self.landmarker = landmarker
        self.second_detector = second_detector  # asked when BlazeFace finds no face
        self._roi: FaceRoi | None = None
        self.detector_runs = 0  # counters for callers and tests
        self.frames = 0

    def reset(self) -> None:
        self._roi = None

    @property
    def tracking(self) -> bool:
        return self._roi is not None

    def follow(self, landmarks: np.ndarray) -> None:
        """The tracked face has moved to these landmarks (another tracker followed it since
        the last mesh): the next mesh looks there."""
        if self._roi is not None:
            self._roi = roi_from_landmarks(landmarks)

    def _pick(self, detections: list[FaceDetection]) -> FaceDetection | None:
        # the largest face: the actor in front of the camera, not someone passing behind
        return max(detections, key=lambda d: (d.area, d.score), default=None)

    def update(self, frame: np.ndarray) -> FaceReading | None:
        """(H, W, 3) uint8 RGB -> the face's reading, or None when there is none."""
        frame = _check_frame(frame)
        self.frames += 1
        if self._roi is not None:
            reading, _ = self.landmarker.read(frame, self._roi)
            if reading is not None:
                self._roi = roi_from_landmarks(reading.landmarks)
                return reading
            self._roi = None  # lost: look again in this same frame
        self.detector_runs += 1
        best = self._pick(self.landmarker.detect(frame))
        reading = None
        if best is not None:
            reading, _ = self.landmarker.read(frame, roi_from_detection(best), detected=True)
        if reading is None and self.second_detector is not None:
            roi = self.second_detector(frame)
            if roi is not None:
                reading, _ = self.landmarker.read(frame, roi, detected=True)
        if reading is not None:
            self._roi = roi_from_landmarks(reading.landmarks)
        return reading
