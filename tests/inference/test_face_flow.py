"""Following the face between mesh runs (`inference.face.flow`): a real photo moved by a known
turn, scale and shift is followed to within a pixel, and a face that vanishes is let go."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from freeavatar_server.inference.face.flow import RIGID_LANDMARKS, FaceFlow, moved_landmarks
from freeavatar_server.inference.face.front import FaceFront

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    photo = skimage_data.astronaut()
    face = FaceFront(threads=1).track().update(photo)
    assert face is not None
    return photo, face.landmarks


def similarity(degrees: float, scale: float, shift: tuple[float, float], centre: np.ndarray) -> np.ndarray:
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), degrees, scale)
    m[:, 2] += shift
    return m


def test_a_moved_photo_is_followed_frame_by_frame(astronaut) -> None:
    photo, landmarks = astronaut
    centre = landmarks[:, :2].mean(0)
    flow = FaceFlow()
    flow.start(photo, landmarks)
    # three frames, each a little further: 2 degrees, 2% larger and 4 px right, 3 px down per frame
    for step in range(1, 4):
        truth = similarity(2.0 * step, 1.02**step, (4.0 * step, 3.0 * step), centre)
        frame = cv2.warpAffine(photo, truth, photo.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
        found = flow.follow(frame)
        assert found is not None
        rigid = landmarks[list(RIGID_LANDMARKS)]
        error = np.linalg.norm(moved_landmarks(rigid, found)[:, :2] - moved_landmarks(rigid, truth)[:, :2], axis=1)
        assert error.mean() < 1.0, (step, error.mean())


def test_a_face_that_vanishes_is_let_go(astronaut) -> None:
    photo, landmarks = astronaut
    flow = FaceFlow()
    assert flow.follow(photo) is None  # nothing to follow before a mesh
    flow.start(photo, landmarks)
    assert flow.follow(np.full_like(photo, 128)) is None  # a flat frame: nothing to track
    assert flow.follow(photo) is None  # lost stays lost until the next mesh starts it again
    flow.start(photo, landmarks)
    assert flow.follow(np.ascontiguousarray(photo[:240, :320])) is None  # the frame size changed
    flow.start(photo, landmarks)
    assert np.allclose(flow.follow(photo), np.eye(2, 3), atol=0.05)


def test_depth_scales_with_the_face(astronaut) -> None:
    _, landmarks = astronaut
    moved = moved_landmarks(landmarks, np.array([[2.0, 0.0, 5.0], [0.0, 2.0, -5.0]]))
    assert np.allclose(moved[:, 0], landmarks[:, 0] * 2 + 5) and np.allclose(moved[:, 2], landmarks[:, 2] * 2)
