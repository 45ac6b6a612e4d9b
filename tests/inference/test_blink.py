"""The blink curve (`inference.face.blink`): MediaPipe's blink read as how far the lids are shut,
on the real set's laughing woman with her eyes open and shut, and the curve's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.images import decode_image
from freeavatar_server.inference.face.blink import EYE_BLINKS, BlinkCurve
from freeavatar_server.inference.shipped import ENCODER_INT8_ONNX
from freeavatar_server.live.analysis import Analyser, AnalysisOptions, AnalysisRequest
from freeavatar_server.training.realface.evaluate import SET_DIR, read_labels, region

BLINKS = list(EYE_BLINKS)


def test_the_curve_maps_its_span_onto_the_lids_and_leaves_the_rest_alone() -> None:
    curve = BlinkCurve(0.2, 0.6)
    shapes = np.full(len(ARKIT_BLENDSHAPES), 0.3, np.float32)
    shapes[BLINKS] = [0.1, 0.4]
    out = curve.apply(shapes)
    np.testing.assert_allclose(out[BLINKS], [0.0, 0.5], atol=1e-6)
    others = np.ones(len(ARKIT_BLENDSHAPES), bool)
    others[BLINKS] = False
    assert (out[others] == 0.3).all() and shapes[BLINKS].tolist() == pytest.approx([0.1, 0.4])  # a new array
    shapes[BLINKS] = [0.6, 0.95]
    np.testing.assert_allclose(curve.apply(shapes)[BLINKS], [1.0, 1.0])
    for closed_from, closed_at in ((0.5, 0.5), (0.6, 0.2), (-0.1, 0.5), (0.2, 1.5)):
        with pytest.raises(ValueError, match="closed_from < closed_at"):
            BlinkCurve(closed_from, closed_at)


def still(notes: str) -> np.ndarray:
    face = next(f for f in read_labels() if f.photo.startswith("featclip_crying_laughing") and f.notes.startswith(notes))
    return region(decode_image((SET_DIR / "photos" / face.photo).read_bytes()), face.box)[0]


def test_the_live_path_serves_shut_eyes_shut_and_open_ones_open() -> None:
    """MediaPipe reads the woman's laughing eyes 0.1-0.2 shut and her shut ones 0.6-0.7; as
    served, the first are open and the second shut further. Without the curve the analyser serves
    MediaPipe's own."""
    served = {}
    for curve in (BlinkCurve(), None):
        analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, blink_curve=curve))
        for notes in ("smile showing teeth with the eyes closed", "laughing, jaw dropped"):
            for _ in range(2):  # found, then tracked
                served[curve, notes] = analyser.analyse(AnalysisRequest(notes, still(notes), 1_000_000, {})).blendshapes
    for notes in ("smile showing teeth with the eyes closed", "laughing, jaw dropped"):
        np.testing.assert_allclose(served[BlinkCurve(), notes], BlinkCurve().apply(served[None, notes]), atol=1e-6)
    shut, open_ = served[BlinkCurve(), "smile showing teeth with the eyes closed"], served[BlinkCurve(), "laughing, jaw dropped"]
    assert shut[BLINKS].mean() > max(0.7, served[None, "smile showing teeth with the eyes closed"][BLINKS].mean() + 0.05)
    assert open_[BLINKS].max() < 0.05 < served[None, "laughing, jaw dropped"][BLINKS].max()
