"""MediaPipe's Face Landmarker on ONNX Runtime: the shipped models on real photos and on frames
built to break it (nothing here is mocked)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.inference.face_landmarker import (
    ALIGN_EYE_DISTANCE,
    ALIGN_EYE_Y,
    MEDIAPIPE_BLENDSHAPES,
    FaceLandmarker,
    FaceTrack,
    align_face,
    eye_centres,
    roi_from_detection,
)
from freeavatar_server.inference.shipped import MEDIAPIPE_DIR

skimage_data = pytest.importorskip("skimage.data")

ASTRONAUT_FACE = np.array([175.0, 66.0, 275.0, 176.0])  # hand-drawn, as benchmarks/head_pose.py


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union)


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker(threads=1)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def rotate(frame: np.ndarray, clockwise_deg: float) -> np.ndarray:
    h, w = frame.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -clockwise_deg, 1.0)  # OpenCV: + is anticlockwise
    return cv2.warpAffine(frame, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def test_astronaut_one_face_around_her_face(landmarker, astronaut):
    dets = landmarker.detect(astronaut)
    assert len(dets) == 1
    det = dets[0]
    assert det.score > 0.8
    assert iou(det.box, ASTRONAUT_FACE) > 0.6
    eyes = det.keypoints[:2]
    assert eyes[0, 0] < eyes[1, 0]  # the subject's right eye is on the image's left
    assert np.all((eyes >= ASTRONAUT_FACE[:2]) & (eyes <= ASTRONAUT_FACE[2:]))


def test_reading_on_astronaut(landmarker, astronaut):
    reading = FaceTrack(landmarker).update(astronaut)
    assert reading is not None and reading.detected
    assert reading.landmarks.shape == (478, 3) and reading.landmarks.dtype == np.float32
    assert reading.confidence > 0.9
    assert iou(reading.box, ASTRONAUT_FACE) > 0.6
    bs = reading.blendshapes
    assert bs.shape == (52,) and bs.dtype == np.float32
    assert np.all((bs >= 0) & (bs <= 1))
    named = dict(zip(ARKIT_BLENDSHAPES, bs, strict=True))
    # she smiles with her mouth closed: plainly visible
    assert named["mouthSmileLeft"] > 0.5 and named["mouthSmileRight"] > 0.5
    assert named["jawOpen"] < 0.2 and named["eyeBlinkLeft"] < 0.3 and named["eyeBlinkRight"] < 0.3
    # near frontal, head slightly down
    yaw, pitch, roll = reading.head_pose
    assert abs(yaw) < 10 and -20 < pitch < 5 and abs(roll) < 10


def test_blendshapes_are_mapped_by_name(landmarker, astronaut):
    reading = FaceTrack(landmarker).update(astronaut)
    raw = landmarker.blendshapes_mediapipe(reading.landmarks)
    mapped = landmarker.blendshapes(reading.landmarks)
    for j, name in enumerate(MEDIAPIPE_BLENDSHAPES[1:], start=1):
        assert mapped[ARKIT_BLENDSHAPES.index(name)] == pytest.approx(float(np.clip(raw[j], 0, 1)))
    assert mapped[ARKIT_BLENDSHAPES.index("tongueOut")] == 0.0  # not in MediaPipe's 52
    assert set(MEDIAPIPE_BLENDSHAPES[1:]) | {"tongueOut"} == set(ARKIT_BLENDSHAPES)


def test_blendshapes_graph_answers_as_litert_does(landmarker):
    """The shipped blendshapes graph (written out again by scripts/fetch_mediapipe.py) against
    LiteRT running MediaPipe's own .tflite on the astronaut's points, recorded by that script."""
    reference = np.load(MEDIAPIPE_DIR / "blendshapes_litert_reference.npz")
    assert reference["points"].shape == (1, 146, 2)
    got = landmarker.blendshape_model.run(None, {"points": reference["points"]})[0]
    assert np.abs(got - reference["blendshapes"]).max() < 1e-5
    assert reference["blendshapes"].max() > 0.5  # a real reading (she smiles), not a blank


def test_head_pose_signs_follow_the_image(landmarker, astronaut):
    """Mirroring flips yaw and roll; turning the photo clockwise adds clockwise roll."""
    base = FaceTrack(landmarker).update(astronaut).head_pose
    mirrored = FaceTrack(landmarker).update(np.ascontiguousarray(astronaut[:, ::-1])).head_pose
    assert mirrored[0] == pytest.approx(-base[0], abs=3)
    assert mirrored[1] == pytest.approx(base[1], abs=3)
    assert mirrored[2] == pytest.approx(-base[2], abs=3)
    turned = FaceTrack(landmarker).update(rotate(astronaut, 20)).head_pose
    assert turned[2] - base[2] == pytest.approx(20, abs=4)
    assert turned[0] == pytest.approx(base[0], abs=4)


def test_blank_frame_gives_none(landmarker):
    track = FaceTrack(landmarker)
    blank = np.zeros((480, 640, 3), np.uint8)
    assert landmarker.detect(blank) == []
    assert track.update(blank) is None
    assert track.update(np.full((480, 640, 3), 200, np.uint8)) is None
    assert not track.tracking


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda img: np.ascontiguousarray(img[::-1, ::-1]), id="upside_down"),
        pytest.param(lambda img: cv2.resize(img, (24, 24), interpolation=cv2.INTER_AREA), id="tiny"),
        pytest.param(lambda img: np.ascontiguousarray(img[:1, :1]), id="one_pixel"),
        pytest.param(lambda img: np.ascontiguousarray(img[:, 225:]), id="cut_by_left_border"),
        pytest.param(lambda img: np.ascontiguousarray(img[110:, :]), id="cut_by_top_border"),
        pytest.param(lambda img: np.ascontiguousarray(img[:, :, :].repeat(3, axis=1)), id="very_wide"),
    ],
)
def test_awkward_frames_never_raise(landmarker, astronaut, make):
    frame = make(astronaut)
    track = FaceTrack(landmarker)
    for _ in range(3):
        reading = track.update(frame)
        if reading is not None:
            assert reading.landmarks.shape == (478, 3)
            assert np.all(np.isfinite(reading.landmarks)) and np.all(np.isfinite(reading.head_pose))
            assert np.all((reading.blendshapes >= 0) & (reading.blendshapes <= 1))
    landmarker.detect(frame)


def test_two_faces_side_by_side(landmarker, astronaut):
    """Two people in one frame: both found, the larger one tracked. (The short-range detector
    wants faces at least ~12% of the frame's long side: two whole 512 px photos side by side
    put each face at 10%, so the photos are cut closer to the face first.)"""
    face = astronaut[10:330, 60:380]  # her face is 100 px wide at (115..215, 56..166) here
    smaller = cv2.resize(face, None, fx=0.8, fy=0.8)
    smaller = np.pad(smaller, ((0, face.shape[0] - smaller.shape[0]), (0, 0), (0, 0)), mode="edge")
    frame = np.ascontiguousarray(np.hstack([smaller, face]))  # the larger face on the right
    dets = landmarker.detect(frame)
    assert len(dets) == 2
    reading = FaceTrack(landmarker).update(frame)
    assert reading is not None
    assert reading.box[0] > smaller.shape[1]  # the larger face, whatever the scores say
    # whole photos side by side: faces too small for this detector, but nothing breaks
    FaceTrack(landmarker).update(np.ascontiguousarray(np.hstack([astronaut, astronaut[:, ::-1]])))


def test_tracking_skips_the_detector_on_a_still_image(landmarker, astronaut):
    track = FaceTrack(landmarker)
    first = track.update(astronaut)
    second = track.update(astronaut)
    third = track.update(astronaut)
    assert first.detected and not second.detected and not third.detected
    assert track.detector_runs == 1 and track.frames == 3
    d = np.linalg.norm(second.landmarks[:, :2] - first.landmarks[:, :2], axis=1)
    assert np.median(d) < 3.0  # the region moved, the face did not


def test_track_recovers_after_losing_the_face(landmarker, astronaut):
    track = FaceTrack(landmarker)
    assert track.update(astronaut) is not None
    assert track.update(np.zeros_like(astronaut)) is None
    again = track.update(astronaut)
    assert again is not None and again.detected
    assert track.detector_runs == 3


def test_rejects_bad_frames(landmarker):
    with pytest.raises(ValueError):
        FaceTrack(landmarker).update(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError):
        landmarker.detect(np.zeros((64, 64, 3), np.float32))


def test_aligned_crop_has_level_eyes(landmarker, astronaut):
    size = 128
    tilted = rotate(astronaut, 25)
    reading = FaceTrack(landmarker).update(tilted)
    assert reading is not None
    crop = align_face(tilted, reading.landmarks, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    # the mesh run again on the aligned crop (scaled up) finds the eyes level, where they belong
    big = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_CUBIC)
    again = FaceTrack(landmarker).update(big)
    assert again is not None
    a, b = (p * size / 512 for p in eye_centres(again.landmarks))
    assert math.degrees(math.atan2(b[1] - a[1], b[0] - a[0])) == pytest.approx(0, abs=2.5)
    mid = (a[:2] + b[:2]) / 2
    assert mid[0] == pytest.approx(size / 2, abs=0.04 * size)
    assert mid[1] == pytest.approx(ALIGN_EYE_Y * size, abs=0.04 * size)
    assert np.linalg.norm(b - a) == pytest.approx(ALIGN_EYE_DISTANCE * size, rel=0.12)


def test_roi_from_detection_is_square_and_level(landmarker, astronaut):
    det = landmarker.detect(astronaut)[0]
    roi = roi_from_detection(det)
    assert roi.size == pytest.approx(1.5 * max(det.box[2] - det.box[0], det.box[3] - det.box[1]))
    assert abs(math.degrees(roi.rotation)) < 10
    tilted = landmarker.detect(rotate(astronaut, 25))[0]
    assert math.degrees(roi_from_detection(tilted).rotation) == pytest.approx(25, abs=6)
