"""The jaw lift (`inference.face.jaw`): MediaPipe's jawOpen raised to what its mesh shows of the
lips, on real faces (the real set's worried woman, lips apart, which MediaPipe reads as shut;
her closed-lipped crying; the astronaut's grin, teeth together) and in arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.images import decode_image
from freeavatar_server.inference.face.carry import SMILE_BLENDSHAPES
from freeavatar_server.inference.face.front import FaceFront
from freeavatar_server.inference.face.jaw import EYE_CORNERS, INNER_LIPS, JAW_OPEN, JawLift, lip_gap
from freeavatar_server.inference.shipped import ENCODER_INT8_ONNX
from freeavatar_server.live.analysis import Analyser, AnalysisOptions, AnalysisRequest
from freeavatar_server.training.realface.evaluate import SET_DIR, read_labels, region


def mesh(gap: float, eyes: float = 60.0) -> np.ndarray:
    """A mesh whose inner lips are `gap` eye-corner distances apart."""
    points = np.zeros((478, 3), np.float32)
    points[EYE_CORNERS[0]], points[EYE_CORNERS[1]] = (100, 100, 0), (100 + eyes, 100, 0)
    points[INNER_LIPS[0]], points[INNER_LIPS[1]] = (130, 160, 5), (130, 160 + gap * eyes, 5)
    return points


def test_jaw_open_rises_to_the_line_of_the_gap_and_never_falls() -> None:
    lift = JawLift(intercept=-0.01, slope=2.5)
    assert abs(lip_gap(mesh(0.2)) - 0.2) < 1e-6
    shapes = np.zeros(len(ARKIT_BLENDSHAPES), np.float32)
    shapes[JAW_OPEN] = 0.05
    out = lift.lift(shapes, mesh(0.2))
    assert abs(out[JAW_OPEN] - 0.49) < 1e-5 and shapes[JAW_OPEN] == np.float32(0.05)  # a new array
    assert (np.delete(out, JAW_OPEN) == 0).all()
    assert lift.lift(shapes, mesh(0.0))[JAW_OPEN] == np.float32(0.05)  # shut lips: MediaPipe's own
    shapes[JAW_OPEN] = 0.9
    assert lift.lift(shapes, mesh(0.2))[JAW_OPEN] == np.float32(0.9)  # a wide mouth keeps its reading
    assert lift.lift(np.zeros(52, np.float32), mesh(2.0))[JAW_OPEN] == 1.0  # clipped
    # a smile parts the lips over closed teeth: the line counts as far as there is no smile
    grin = np.zeros(len(ARKIT_BLENDSHAPES), np.float32)
    grin[list(SMILE_BLENDSHAPES)] = 0.75
    assert abs(lift.lift(grin, mesh(0.2))[JAW_OPEN] - 0.25 * 0.49) < 1e-5
    grin[list(SMILE_BLENDSHAPES)] = 1.0
    assert lift.lift(grin, mesh(0.2))[JAW_OPEN] == 0.0
    with pytest.raises(ValueError, match="finite"):
        JawLift(slope=float("nan"))


def stills(notes: str) -> list[np.ndarray]:
    faces = [f for f in read_labels() if f.photo.startswith("featclip_crying_laughing") and f.notes.startswith(notes)]
    return [region(decode_image((SET_DIR / "photos" / f.photo).read_bytes()), f.box)[0] for f in faces]


def test_the_live_path_opens_the_jaw_the_mesh_sees_open() -> None:
    """The worried stills' lips are apart (MediaPipe's jawOpen under 0.05), the crying ones
    pressed: served, the first open (0.15-0.2 of the way), the second stay shut. Without the
    lift the analyser serves MediaPipe's own."""
    front = FaceFront(threads=1, emotions=False)
    served = {}
    for lift in (JawLift(), None):
        analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, jaw_lift=lift))
        for kind in ("worried", "crying"):
            for k, still in enumerate(stills(kind)):
                for _ in range(2):  # found, then tracked
                    served[lift, kind, k] = analyser.analyse(AnalysisRequest(f"{kind}{k}", still, 1_000_000, {})).blendshapes
    for kind, opens in (("worried", True), ("crying", False)):
        for k, still in enumerate(stills(kind)):
            own = served[None, kind, k][JAW_OPEN]
            assert own < 0.05
            track = front.track()
            track.update(still)
            gap = lip_gap(track.update(still).landmarks)
            assert (gap > 0.05) == opens, (kind, gap)
            assert served[JawLift(), kind, k][JAW_OPEN] > 0.14 if opens else served[JawLift(), kind, k][JAW_OPEN] < 0.05


def test_a_grin_showing_its_teeth_keeps_its_jaw_shut() -> None:
    """The astronaut's smile parts her lips over closed teeth: the gap alone would read a jaw a
    third of the way down; the smile keeps it shut."""
    from skimage import data

    front = FaceFront(threads=1, emotions=False, jaw_lift=JawLift())
    face = front.track().update(data.astronaut())
    assert face is not None and face.blendshapes[list(SMILE_BLENDSHAPES)].mean() > 0.5
    assert JawLift().intercept + JawLift().slope * lip_gap(face.landmarks) > 0.25  # the gap says open
    assert face.blendshapes[JAW_OPEN] < 0.1
