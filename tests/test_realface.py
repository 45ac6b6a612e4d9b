"""The real-face evaluation on the set that ships with the package: real photos, the live
path's analysis, the default expression reader against the animator alone."""

from __future__ import annotations

import numpy as np
import pytest

from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.realface.evaluate import (
    EXPECTED,
    LABELS,
    SET_DIR,
    choose_threshold,
    contact_sheet,
    read_faces,
    read_labels,
    report_of,
    threshold_score,
)


def test_the_set_is_labelled_and_split():
    faces = read_labels()
    assert len(faces) >= 25
    assert {f.split for f in faces} == {"eval", "tune"}
    assert all((SET_DIR / "photos" / f.photo).exists() for f in faces)
    for label in LABELS:  # every label has a controls row for every built-in avatar
        assert set(EXPECTED[label]) == set(BUILTIN_AVATARS)


@pytest.fixture(scope="module")
def real_set():
    """Every face of the set read once; the tune split's report and results come from it."""
    return read_faces(read_labels())


@pytest.fixture(scope="module")
def tune(real_set):
    return report_of("tune", real_set), [r for r in real_set if r.face.split == "tune"]


def test_a_real_person_moves_the_arkit_avatar(tune):
    report, results = tune
    assert report.found >= 0.9
    readers = report.readers
    # the blendshapes make the ARKit avatar follow real smiles, and so does the animator alone
    # (trained on keyframes; the one trained on expression consistency alone never moved)
    assert readers["human_arkit"]["moved_when_shown"]["smile"][0] >= 4
    assert readers["human_arkit/animator"]["moved_when_shown"]["smile"][0] >= 3
    # (balanced: an avatar that never moves scores 0.5; the animator alone reads real brows and
    # closed eyes poorly, so it stays well below the blendshapes)
    assert readers["human_arkit"]["balanced"] > 0.8 and readers["human_arkit/animator"]["balanced"] > 0.6
    # the default reader is MediaPipe's blendshapes on an all-ARKit rig, the smile and lowered
    # brows guarded by a real-face emotion classifier, the blinks read as lid closure: it
    # follows every label MediaPipe follows, and stays still where MediaPipe stays still, at
    # least as often on smiles, frowns and closed eyes (and more often on closed eyes)
    arkit, mediapipe = readers["human_arkit"], readers["mediapipe"]
    assert arkit["moved_when_shown"] == mediapipe["moved_when_shown"]
    for label, (still, judged) in mediapipe["still_when_absent"].items():
        assert arkit["still_when_absent"][label][1] == judged
        mine = arkit["still_when_absent"][label][0]
        assert mine >= still if label in ("smile", "frown", "eyes_closed") else mine == still, label
    assert arkit["still_when_absent"]["eyes_closed"][0] > mediapipe["still_when_absent"]["eyes_closed"][0]
    # the cat smiles with real smiles too, through the animator
    assert readers["cat"]["moved_when_shown"]["smile"][0] >= 3


def test_no_control_stays_frozen_across_the_set(real_set):
    """Every control of every built-in avatar moves on some real face (the real-face issue's
    criterion, on the whole set: a split of 20 faces may show no wide eyes), the ARKit avatar's
    cheekSquint and noseSneer, which MediaPipe never moves, through its animator."""
    report = report_of("all", real_set)
    for name in BUILTIN_AVATARS:
        assert report.frozen_controls[name] == [], name


def test_the_fixed_threshold_stays_near_the_tune_splits_best(tune):
    """The judging threshold was chosen on the tune split and is kept fixed, so that figures
    stay comparable from one model to the next: it must still judge the tune split within 0.015
    of the best candidate there (the default readers' mean balanced score; a few labels'
    worth on the tune split's 73; with the encoder before the bfloat16 fine-tune the best was 0.1,
    by 0.013; now 0.2 again)."""
    report, results = tune
    best = choose_threshold(results)
    assert threshold_score(results, report.moved_threshold) >= threshold_score(results, best) - 0.015


def test_contact_sheet_shows_each_face_beside_every_avatar(tune):
    _, results = tune
    sheet = contact_sheet(results, size=32)
    assert sheet.shape == (32 * len(results), 32 * (1 + len(BUILTIN_AVATARS)), 3) and sheet.dtype == np.uint8
