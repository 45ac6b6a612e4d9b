"""The emotion guard (`inference.face.emotion`): the shipped real-face emotion classifier on the
real set's crying-then-laughing woman, the eye-level face crop, and the guard's arithmetic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.images import decode_image
from freeavatar_server.inference.face.emotion import (
    BROW_DOWN,
    EMOTIONS,
    SMILE,
    UnitGuard,
    face_crop,
    frown_share,
    guard_blendshapes,
    smile_share,
)
from freeavatar_server.inference.face.front import FaceFront
from freeavatar_server.inference.shipped import EMOTION_ONNX, ENCODER_INT8_ONNX
from freeavatar_server.live.analysis import Analyser, AnalysisOptions, AnalysisRequest
from freeavatar_server.training.realface.evaluate import SET_DIR, read_labels, region


@pytest.fixture(scope="module")
def front() -> FaceFront:
    return FaceFront(threads=1)


def clip_stills(kind: str) -> list[np.ndarray]:
    """The crying-to-laughing clip's stills whose notes start with `kind`, cut as the real-face
    evaluation cuts them."""
    faces = [f for f in read_labels() if f.photo.startswith("featclip_crying_laughing") and f.notes.startswith(kind)]
    return [region(decode_image((SET_DIR / "photos" / f.photo).read_bytes()), f.box)[0] for f in faces]


def test_crying_loses_the_smile_mediapipe_reads_and_laughing_keeps_it_but_not_a_frown(front: FaceFront) -> None:
    for kind, keeps in (("crying", False), ("smile", True), ("laughing", True)):
        stills = clip_stills(kind)
        assert stills, kind
        for still in stills:
            face = front.track().update(still)
            assert face is not None and face.emotions is not None and face.emotions.shape == (len(EMOTIONS),)
            assert face.blendshapes[SMILE].mean() > 0.5  # MediaPipe smiles on each of them
            share = smile_share(face.emotions)
            assert share > 0.95 if keeps else share < 0.5, (kind, np.round(face.emotions, 2))
            # and the other way round: brows lowered on a laughing face are not a frown
            share = frown_share(face.emotions)
            assert share < 0.05 if keeps else share == 1.0, (kind, np.round(face.emotions, 2))


def test_the_live_path_guards_the_blendshapes_it_serves() -> None:
    """The analyser scales the served smile and lowered brows by the mesh's emotion reading;
    without the guard it serves MediaPipe's own blendshapes and reads no emotions."""
    for kind in ("crying", "laughing"):
        still = clip_stills(kind)[0]
        served = {}
        for guard in (True, False):
            analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, emotion_guard=guard))
            for _ in range(2):  # found, then tracked
                served[guard] = analyser.analyse(AnalysisRequest("actor", still, 1_000_000, {})).blendshapes
        track = FaceFront(threads=1).track()
        track.update(still)
        emotions = track.update(still).emotions  # the analyser's second mesh: tracked from the first
        np.testing.assert_allclose(served[True], guard_blendshapes(served[False], emotions), atol=1e-5)
        if kind == "crying":
            assert smile_share(emotions) < 0.5
            assert served[True][SMILE].max() < 0.5 < served[False][SMILE].min()
        else:  # MediaPipe lowers her brows a little as she laughs; the guard takes that away
            assert frown_share(emotions) < 0.05
            assert served[True][BROW_DOWN].max() < 0.05 * served[False][BROW_DOWN].max() + 1e-6


def test_the_face_is_cut_level_with_the_eyes(front: FaceFront) -> None:
    photo = pytest.importorskip("skimage.data").astronaut()
    h, w = photo.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 25.0, 1.0)
    rolled = cv2.warpAffine(photo, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    upright, tilted = (front.track().update(p) for p in (photo, rolled))
    assert upright is not None and tilted is not None
    a, b = face_crop(photo, upright.landmarks), face_crop(rolled, tilted.landmarks)
    assert a.shape == b.shape == (64, 64) and a.dtype == np.uint8
    # the same face, level, in both crops (unlevelled, a 25 degree roll decorrelates them)
    assert np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1] > 0.9
    # and upright: the astronaut's eyes are within a few degrees of level, so her crop is the
    # square around her mesh points, cut without turning
    points = upright.landmarks[:468, :2]
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    half, cx, cy = max(x1 - x0, y1 - y0) / 2, (x0 + x1) / 2, (y0 + y1) / 2
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    plain = cv2.resize(grey[int(cy - half) : int(cy + half), int(cx - half) : int(cx + half)], (64, 64))
    assert np.corrcoef(a.ravel().astype(float), plain.ravel().astype(float))[0, 1] > 0.9


def test_the_guard_scales_the_smile_against_negative_emotions_and_the_frown_against_happiness() -> None:
    blendshapes = np.linspace(0.0, 1.0, len(ARKIT_BLENDSHAPES), dtype=np.float32)
    reading = dict.fromkeys(EMOTIONS, 0.0)

    def emotions(**probabilities: float) -> np.ndarray:
        return np.array([{**reading, **probabilities}[e] for e in EMOTIONS], np.float32)

    for unchanged in (emotions(neutral=1.0), emotions(happy=0.5, sad=0.5), emotions(surprise=0.8, fear=0.1, happy=0.1)):
        np.testing.assert_array_equal(guard_blendshapes(blendshapes, unchanged), blendshapes)
    crying = guard_blendshapes(blendshapes, emotions(sad=0.7, angry=0.2, happy=0.1))
    np.testing.assert_allclose(crying[SMILE], blendshapes[SMILE] * 0.2, atol=1e-6)
    np.testing.assert_array_equal(crying[BROW_DOWN], blendshapes[BROW_DOWN])  # a crying frown stays
    assert smile_share(emotions(sad=1.0)) == 0.0
    laughing = guard_blendshapes(blendshapes, emotions(happy=0.9, neutral=0.05, sad=0.05))
    np.testing.assert_allclose(laughing[BROW_DOWN], blendshapes[BROW_DOWN] * 0.15, atol=1e-6)
    np.testing.assert_array_equal(laughing[SMILE], blendshapes[SMILE])
    assert frown_share(emotions(happy=1.0)) == 0.0
    for guarded in (crying, laughing):  # nothing else moved
        guarded[SMILE], guarded[BROW_DOWN] = blendshapes[SMILE], blendshapes[BROW_DOWN]
        np.testing.assert_array_equal(guarded, blendshapes)


def test_the_units_the_animators_read_are_guarded_towards_their_rest(tmp_path) -> None:
    """The shipped encoder's units come with their rest values; the guard moves the lip-corner
    pulls towards rest against negative emotions and the brow lowerer against happiness."""
    guard = UnitGuard.for_encoder(ENCODER_INT8_ONNX)
    assert guard is not None and len(guard.rest) == 25
    assert UnitGuard.for_encoder(EMOTION_ONNX) is None  # not written for that graph
    units = guard.rest + np.linspace(1.0, 3.0, 25, dtype=np.float32)  # every unit above its rest
    reading = dict.fromkeys(EMOTIONS, 0.0)
    crying = guard.guard(units, np.array([{**reading, "sad": 0.9, "happy": 0.1}[e] for e in EMOTIONS], np.float32))
    smile, brow = list(guard.smile), list(guard.brow_lower)
    np.testing.assert_allclose(crying[smile] - guard.rest[smile], 0.2 * (units[smile] - guard.rest[smile]), rtol=1e-5)
    np.testing.assert_array_equal(crying[brow], units[brow])  # a crying frown stays
    laughing = guard.guard(units, np.array([{**reading, "happy": 1.0}[e] for e in EMOTIONS], np.float32))
    np.testing.assert_allclose(laughing[brow], guard.rest[brow])
    np.testing.assert_array_equal(laughing[smile], units[smile])
    for guarded in (crying, laughing):  # nothing else moved
        guarded[smile + brow] = units[smile + brow]
        np.testing.assert_array_equal(guarded, units)


def test_the_shipped_units_rest_where_the_shipped_encoder_was_trained_to_read_rest() -> None:
    """The rest values beside the shipped encoder are its training run's: -mean/std of the
    action units its read-out was standardised by (that run's seed)."""
    import json

    import torch

    from freeavatar_server.inference.shipped import ENCODER_CHECKPOINT, ENCODER_UNITS
    from freeavatar_server.training.encoder.train import UnitScale

    units = json.loads(ENCODER_UNITS.read_text())
    seed = torch.load(ENCODER_CHECKPOINT, map_location="cpu", weights_only=False)["config"]["seed"]
    assert units["seed"] == seed
    scale = UnitScale.of_training_expressions(seed)
    np.testing.assert_allclose(units["rest"], (-scale.mean / scale.std).numpy(), atol=1e-5)


def test_the_live_path_guards_the_units_its_animators_read_on_a_crying_face() -> None:
    """On a crying still the robot and the cat smile without the guard and not with it; the
    stream's own reading (what the carry and later frames use) keeps the encoder's units."""
    from freeavatar_server.inference.shipped import ANIMATOR_DIR
    from freeavatar_server.live.analysis import AnimatorRef
    from freeavatar_server.synth.avatars import BUILTIN_AVATARS

    still = clip_stills("crying")[-1]
    animators = {name: AnimatorRef(str(ANIMATOR_DIR), name) for name in ("robot", "cat")}
    smiles, units = {}, {}
    for guard in (True, False):
        analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, emotion_guard=guard))
        assert (analyser.unit_guard is not None) == guard
        for _ in range(2):
            analysis = analyser.analyse(AnalysisRequest("actor", still, 1_000_000, animators))
        units[guard] = analyser._expressions["actor"].units
        for name in animators:
            spec = BUILTIN_AVATARS[name].spec
            i = spec.control_names.index("mouth_curve")
            control = spec.controls[i]
            smiles[guard, name] = (analysis.raw[name][i] - control.default) / (control.max - control.default)
    for name in animators:
        assert smiles[True, name] < 0.2 <= smiles[False, name], (name, smiles)
    np.testing.assert_array_equal(units[True], units[False])  # the stream keeps the encoder's own units
