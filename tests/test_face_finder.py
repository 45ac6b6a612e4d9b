"""The synthetic-trained localiser (the front end's second detector) on held-out synthetic
frames and "no face", and crop_face reproducing the encoder's training framing."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from freeavatar_server.inference.face import FaceLocaliser, crop_face
from freeavatar_server.inference.face.localiser import DEFAULT_MODEL
from freeavatar_server.synth.actors import render_faces, render_frames, sample_expressions
from freeavatar_server.training.face.crop_fit import fit_crop_framing

# seeds far from the training shards' (0..~400)
HELD_OUT = 55_555_555


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def localiser() -> FaceLocaliser:
    return FaceLocaliser(DEFAULT_MODEL, threads=1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_detects_held_out_synthetic_faces(localiser: FaceLocaliser) -> None:
    n = 16
    rng = np.random.default_rng(HELD_OUT)
    batch = render_frames(sample_expressions(n, rng), rng.integers(0, 2**62, n), seed=HELD_OUT)
    hits = 0
    for image, box in zip(batch.images, batch.boxes, strict=True):
        det = localiser.detect(image)
        hits += det.confidence >= 0.5 and iou(det.box, box) > 0.5
    assert hits >= 14, f"found {hits}/{n} faces with IoU > 0.5"


def test_says_no_face(localiser: FaceLocaliser) -> None:
    n = 6
    rng = np.random.default_rng(HELD_OUT + 1)
    far_away = np.tile(np.array([[-3000.0, 100.0, -2900.0, 230.0]]), (n, 1))
    rooms = render_frames(
        sample_expressions(n, rng), rng.integers(0, 2**62, n), seed=HELD_OUT + 1,
        face_boxes=far_away,
    ).images  # fmt: skip
    flat = np.full((480, 640, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for image in [*rooms, flat, noise]:
        assert localiser.detect(image).confidence < 0.5


def test_crop_face_reproduces_render_faces_framing() -> None:
    n = 6
    rng = np.random.default_rng(3)
    expr, ids = sample_expressions(n, rng), rng.integers(0, 10**9, n)
    poses = np.zeros((n, 3), np.float32)
    frames = render_frames(expr, ids, poses=poses, nuisance=False, seed=4)
    faces = render_faces(expr, ids, poses=poses, nuisance=False, size=128)

    def face_region_diff(box_shift: float) -> float:
        diffs = []
        for image, box, ref, ref_box in zip(
            frames.images, frames.boxes, faces.images, faces.boxes, strict=True
        ):
            shifted = box + box_shift * (box[2] - box[0]) * np.array([1, 0, 1, 0])
            crop = crop_face(image, shifted, 128).astype(np.float64)
            assert crop.shape == (128, 128, 3)
            x0, y0, x1, y1 = (int(round(v)) for v in ref_box)
            diffs.append(np.abs(crop[y0:y1, x0:x1] - ref[y0:y1, x0:x1]).mean())
        return float(np.mean(diffs))

    # Same identity, expression and pose, rendered once as a frame and once as a crop: inside
    # the face only the identity-dependent framing residual (~3% scale) and resampling differ.
    aligned = face_region_diff(0.0)
    assert aligned < 9.0, aligned
    # the bound is tight enough to catch framing off by a tenth of a face
    assert face_region_diff(0.1) > aligned + 4.0


def test_crop_framing_constants_follow_the_synthetic_geometry() -> None:
    # fresh identities, poses and expressions: the shipped constants stay unbiased and as tight
    # as a refit (errors in face-box widths)
    fit = fit_crop_framing(4000, seed=1)
    assert abs(fit["shipped_cy_bias"]) < 0.005 and abs(fit["shipped_half_bias"]) < 0.005, fit
    assert fit["shipped_cy_std"] < fit["cy_residual"] + 0.003, fit
    assert fit["shipped_half_std"] < fit["half_residual"] + 0.003, fit


def test_crop_face_pads_faces_cut_by_the_frame_edge() -> None:
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :80] = 200
    crop = crop_face(frame, np.array([-30.0, -20.0, 30.0, 50.0]), 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert crop.mean() > 150  # the left edge repeats outwards instead of turning black


def test_onnx_matches_torch() -> None:
    ckpt = DEFAULT_MODEL.with_suffix(".pt")
    if not ckpt.exists():
        pytest.skip("no torch checkpoint shipped beside the ONNX model")
    import onnxruntime as ort

    from freeavatar_server.inference.face.detection import preprocess
    from freeavatar_server.training.face.model import load_localiser

    model, _ = load_localiser(ckpt)
    rng = np.random.default_rng(0)
    frames = render_frames(sample_expressions(2, rng), [1, 2], width=160, height=120).images
    x = preprocess(frames)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(DEFAULT_MODEL), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )[0]
    assert np.abs(got - expected).max() < 1e-3
