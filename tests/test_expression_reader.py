"""Which reader drives an avatar's controls: the blendshapes for ARKit-aliased controls, the
animator for the rest (`live.sessions.Binding`)."""

from __future__ import annotations

import numpy as np
import pytest

from freeavatar._proto import stream_pb2
from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar.rig import RigControl, RigSpec
from freeavatar_server.live.sessions import BadBinding, Binding

AUTO = stream_pb2.EXPRESSION_READER_AUTO
ANIMATOR = stream_pb2.EXPRESSION_READER_ANIMATOR
BLENDSHAPES = stream_pb2.EXPRESSION_READER_BLENDSHAPES

MIXED = RigSpec(
    "mixed",
    (
        RigControl("jaw", arkit_alias="jawOpen"),
        RigControl("grin"),
        RigControl("brow", min=-1.0, max=1.0, arkit_alias="browInnerUp"),
    ),
)
PLAIN = RigSpec("plain", (RigControl("antenna"), RigControl("glow")))


def bind(spec: RigSpec, reader: int) -> Binding:
    return Binding.resolve(stream_pb2.AvatarBinding(avatar_id="a", reader=reader), spec)


def shapes(**values: float) -> np.ndarray:
    out = np.zeros(len(ARKIT_BLENDSHAPES), np.float32)
    for name, value in values.items():
        out[ARKIT_BLENDSHAPES.index(name)] = value
    return out


def test_auto_takes_aliased_controls_from_blendshapes_and_the_rest_from_the_animator():
    binding = bind(MIXED, AUTO)
    animated = np.array([0.1, 0.7, -0.5], np.float32)
    got = binding.read(animated, shapes(jawOpen=0.8, browInnerUp=0.4))
    # a two-sided control moves from 0 up with its blendshape
    np.testing.assert_allclose(got, [0.8, 0.7, 0.4])
    assert binding.uses_animator
    np.testing.assert_allclose(binding.read(animated, None), animated)  # no real-face reading


def test_a_rig_of_aliases_only_needs_no_animator():
    binding = bind(RigSpec.arkit52("head"), AUTO)
    assert not binding.uses_animator
    got = binding.read(None, shapes(mouthSmileLeft=0.9, eyeBlinkRight=1.0))
    assert got[ARKIT_BLENDSHAPES.index("mouthSmileLeft")] == pytest.approx(0.9)
    assert got[ARKIT_BLENDSHAPES.index("eyeBlinkRight")] == pytest.approx(1.0)
    assert binding.read(None, None) is None  # no face: nothing to show


def test_auto_takes_the_blendshapes_mediapipe_never_moves_from_the_animator_where_there_is_one():
    binding = bind(RigSpec.arkit52("head"), AUTO)
    assert binding.wants_animator and not binding.uses_animator  # used where it exists, not required
    sneer, smile = ARKIT_BLENDSHAPES.index("noseSneerLeft"), ARKIT_BLENDSHAPES.index("mouthSmileLeft")
    animated = np.full(len(ARKIT_BLENDSHAPES), 0.4, np.float32)
    got = binding.read(animated, shapes(mouthSmileLeft=0.9))
    assert got[sneer] == pytest.approx(0.4)  # the animator's: MediaPipe's noseSneer is always 0
    assert got[smile] == pytest.approx(0.9)  # the blendshapes' for every shape MediaPipe moves
    assert binding.read(None, shapes(noseSneerLeft=0.7))[sneer] == pytest.approx(0.0)  # no animator: at rest
    assert not bind(RigSpec.arkit52("head"), BLENDSHAPES).wants_animator
    assert not bind(RigSpec("lids", (RigControl("lid", arkit_alias="eyeBlinkLeft"),)), AUTO).wants_animator


def test_animator_reader_ignores_the_blendshapes():
    binding = bind(MIXED, ANIMATOR)
    animated = np.array([0.1, 0.7, -0.5], np.float32)
    np.testing.assert_allclose(binding.read(animated, shapes(jawOpen=1.0)), animated)
    assert binding.uses_animator


def test_blendshapes_reader_leaves_other_controls_at_rest():
    binding = bind(MIXED, BLENDSHAPES)
    assert not binding.uses_animator
    np.testing.assert_allclose(binding.read(None, shapes(jawOpen=0.5)), [0.5, 0.0, 0.0])
    assert binding.read(None, None) is None


def test_blendshapes_reader_refuses_a_rig_without_aliases():
    with pytest.raises(BadBinding, match="no control with an ARKit alias"):
        bind(PLAIN, BLENDSHAPES)
    assert bind(PLAIN, AUTO).read(np.array([0.2, 0.3], np.float32), shapes(jawOpen=1.0)).tolist() == pytest.approx([0.2, 0.3])


def test_an_unknown_reader_is_refused():
    with pytest.raises(BadBinding, match="unknown expression reader"):
        bind(MIXED, 7)


def test_the_reader_round_trips_through_the_proto():
    assert bind(MIXED, BLENDSHAPES).to_proto().reader == BLENDSHAPES


def test_a_blendshape_at_rest_leaves_the_control_at_its_default():
    spec = RigSpec("lids", (RigControl("lid", min=0.0, max=1.0, default=0.3, arkit_alias="eyeBlinkLeft"),))
    binding = bind(spec, BLENDSHAPES)
    assert binding.read(None, shapes())[0] == pytest.approx(0.3)  # where the avatar rests with no face too
    assert binding.read(None, shapes(eyeBlinkLeft=1.0))[0] == pytest.approx(1.0)
