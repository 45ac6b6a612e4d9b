"""Blendshapes between face meshes (`inference.face.carry`): the fit, which encoder it belongs to,
and a blink between two meshes on the live path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freeavatar._proto import stream_pb2
from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.inference.face.carry import (
    SMILE_BLENDSHAPES,
    BlendshapeCarry,
    file_digest,
)
from freeavatar_server.inference.shipped import ENCODER_INT8_ONNX, ENCODER_ONNX
from freeavatar_server.live.analysis import Analyser, AnalysisOptions, AnalysisRequest, EncodedFrame
from freeavatar_server.media import encode_jpeg
from freeavatar_server.synth.video import make_trajectory, render_trajectory_frames
from freeavatar_server.training.face.blendshape_carry import ClipReading, correlations, fit

BLINK = ARKIT_BLENDSHAPES.index("eyeBlinkLeft")
SMILE = list(SMILE_BLENDSHAPES)


def walk(rng: np.random.Generator, frames: int, width: int) -> np.ndarray:
    return np.cumsum(rng.normal(0, 0.1, (frames, width)), axis=0)


def test_the_fit_carries_what_the_units_predict_and_holds_the_rest() -> None:
    rng = np.random.default_rng(0)
    clips = []
    for _ in range(6):
        units = rng.normal(0, 1, (300, 25))  # a unit changes from frame to frame ...
        blendshapes = np.zeros((300, 52))
        blendshapes[:, 0] = 0.5 + 0.05 * units[:, 3]  # ... and one blendshape with it
        blendshapes[:, 1] = 0.5 + 0.05 * walk(rng, 300, 1)[:, 0]  # moves, but with no unit
        clips.append(ClipReading(units, np.clip(blendshapes, 0, 1)))
    carry = fit(clips, strength=1.0)
    assert carry.weights[3, 0] == pytest.approx(0.05, abs=0.005)
    assert not carry.weights[:, 1:].any()  # carrying by unrelated units reads worse than holding
    assert correlations(clips, carry)[0] > 0.99 and correlations(clips, None)[0] < 0.1


def test_the_smile_lift_raises_lip_corners_the_encoder_under_reads(tmp_path: Path) -> None:
    """Fitted as the line of each lip-corner unit on MediaPipe's smile that side; a reading below
    what the smile says is raised to it, one above it kept; saved and loaded with the carry."""
    rng = np.random.default_rng(1)
    clips = []
    for _ in range(3):
        blendshapes = np.clip(rng.uniform(0, 1, (200, 52)), 0, 1)
        units = rng.normal(0, 0.01, (200, 25))
        units[:, 7] = -0.5 + 2.0 * blendshapes[:, SMILE[0]]
        units[:, 8] = -0.4 + 1.5 * blendshapes[:, SMILE[1]]
        clips.append(ClipReading(units, blendshapes))
    lift = fit(clips, strength=1.0, smile_units=(7, 8)).smile_lift
    assert lift is not None and lift.units == (7, 8)
    np.testing.assert_allclose(lift.lines, [[-0.5, 2.0], [-0.4, 1.5]], atol=1e-4)
    units = np.zeros(25, np.float32)
    units[8] = 2.0  # the right corner read above what the smile says
    lifted = lift.lift(units, np.array([0.5, 0.5]))
    assert lifted[7] == pytest.approx(0.5) and lifted[8] == 2.0 and not lifted[np.r_[:7, 9:25]].any()
    assert lift.lift(units, np.zeros(2))[7] == 0.0  # no smile: the encoder's own reading
    assert fit(clips, strength=1.0).smile_lift is None  # fitted without the units: no lift
    ours = tmp_path / "ours.onnx"
    ours.write_bytes(b"one encoder")
    BlendshapeCarry(np.zeros((25, 52), np.float32), (file_digest(ours),), lift).save(tmp_path / "carry.npz")
    loaded = BlendshapeCarry.for_encoder(ours, tmp_path / "carry.npz")
    assert loaded is not None and loaded.smile_lift is not None
    assert loaded.smile_lift.units == (7, 8) and np.array_equal(loaded.smile_lift.lines, lift.lines)
    assert BlendshapeCarry.for_encoder(tmp_path / "carry.npz", tmp_path / "carry.npz") is None  # another encoder
    shipped = BlendshapeCarry.for_encoder(ENCODER_INT8_ONNX)
    assert shipped is not None and shipped.smile_lift is not None  # shipped for the shipped encoder


def test_the_carry_is_used_only_with_an_encoder_it_was_fitted_through(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.onnx", tmp_path / "theirs.onnx"
    ours.write_bytes(b"one encoder")
    theirs.write_bytes(b"another encoder")
    path = tmp_path / "carry.npz"
    BlendshapeCarry(np.ones((25, 52), np.float32), (file_digest(ours),)).save(path)
    assert BlendshapeCarry.for_encoder(ours, path) is not None
    assert BlendshapeCarry.for_encoder(theirs, path) is None
    assert BlendshapeCarry.for_encoder(ours, tmp_path / "none.npz") is None
    # the shipped carry belongs to the shipped encoder (refit it when the encoder changes)
    assert BlendshapeCarry.for_encoder(ENCODER_INT8_ONNX) is not None
    assert BlendshapeCarry.for_encoder(ENCODER_ONNX) is not None


def test_a_blink_between_meshes_shows_when_it_happens() -> None:
    """15 meshes a second, each read from the frame after its own: held, a blink's closed lids
    arrive a frame or two late; carried by the encoder, close to when the mesh would see them."""
    trajectory = make_trajectory(2.0, 30.0, seed=3)  # the demo's actor: a blink at frames 38-40
    frames = [encode_jpeg(f) for f in render_trajectory_frames(trajectory, 30, 46).images]

    def lids(face_rate_hz: float, carry: bool) -> np.ndarray:
        analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, face_rate_hz=face_rate_hz))
        if not carry:
            analyser.carry = None
        read = []
        for i, jpeg in enumerate(frames):
            frame = EncodedFrame(stream_pb2.IMAGE_FORMAT_JPEG, jpeg)
            (analysis,) = analyser.analyse_batch([AnalysisRequest("actor", frame, 1_000_000 + i * 33_333, {})])
            analyser.refresh_meshes()
            read.append(analysis.blendshapes[BLINK])
        return np.array(read)

    own = lids(0.0, carry=False)  # what the mesh of each frame itself reads, one frame late
    own = np.append(own[1:], own[-1])  # ... lined up with the frame it was read from
    assert own.max() > 0.6  # the blink is there to be seen
    held, carried = lids(15.0, carry=False), lids(15.0, carry=True)
    held_error, carried_error = np.abs(held - own).mean(), np.abs(carried - own).mean()
    assert carried_error < 0.5 * held_error, (np.round(own, 2), np.round(held, 2), np.round(carried, 2))
