"""Fit the blendshape carry (`inference.face.carry`): ridge regression of the change in MediaPipe's
blendshapes on the change in the expression encoder's action units between frames one and two
apart, on synthetic actor clips read by the live front end with the mesh on every frame (each
mesh's reading as the carry starts from it when serving: jawOpen lifted, no emotion guard). Scored
on clips of held-out identities as the live path runs: the mesh on every other frame (15 a
second at 30 fps), its reading used from the frame after; against the mesh's own reading of
every frame.

    python -m freeavatar_server.training.face.blendshape_carry [--train 12] [--test 6] [--ship]

`--ship` writes models/blendshape_carry.npz, for the shipped encoder's two graphs (float and
int8: their units agree to within the int8 parity docs/models.md reports), with the smile's lift
(`SmileLift`): per side, the line of the lip-corner-pull unit on MediaPipe's
smile over every frame of the training clips. Refit it after
shipping another encoder: the carry is not used with an encoder it was not fitted through.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np
from rich.progress import track

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.inference.encoder import OnnxEncoder
from freeavatar_server.inference.face.carry import (
    LIP_CORNER_PULLS,
    SMILE_BLENDSHAPES,
    BlendshapeCarry,
    SmileLift,
    file_digest,
)
from freeavatar_server.inference.face.crop import crop_face
from freeavatar_server.inference.face.front import FaceFront
from freeavatar_server.inference.face.jaw import JawLift
from freeavatar_server.inference.shipped import (
    BLENDSHAPE_CARRY,
    ENCODER_INT8_ONNX,
    ENCODER_ONNX,
    ENCODER_UNITS,
)
from freeavatar_server.synth.video import Trajectory, make_trajectory, trajectory_frames
from freeavatar_server.training.correlation import column_correlations
from freeavatar_server.training.face.pose_train import HELD_OUT_IDENTITY

TRAIN_SEED, TEST_SEED = 43_000_000, 44_000_000  # clip seeds, apart from every other set's
CLIP_SECONDS, FPS = 8.0, 30.0
GAPS = (1, 2)  # frames between a mesh and the frames that carry it, at 15 meshes a second
MESH_EVERY = 2  # the live schedule scored: every other frame (15 a second at 30 fps)
ACTIVE = 0.02  # a blendshape moving less than this (std over the clips) is not scored
REPORTED = ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen", "mouthSmileLeft", "browInnerUp", "browDownLeft")


@dataclass(frozen=True)
class ClipReading:
    """One clip as the front end and encoder read it, every frame (frames without a face dropped)."""

    units: np.ndarray  # (T, 25)
    blendshapes: np.ndarray  # (T, 52)


def clip_trajectories(count: int, seed: int, held_out: bool) -> list[Trajectory]:
    """The synthetic actors' clips (seeds seed, seed + 1, ...), each a person of its own."""
    low = HELD_OUT_IDENTITY if held_out else 0
    identities = np.random.default_rng(seed).integers(low, low + 1_000_000, count)
    return [make_trajectory(CLIP_SECONDS, FPS, seed=seed + i, identity_id=int(identities[i])) for i in range(count)]


def read_clips(encoder: OnnxEncoder, front: FaceFront, trajectories: list[Trajectory]) -> list[ClipReading]:
    clips = []
    for trajectory in track(trajectories, description="reading clips"):
        face_track = front.track()  # the mesh on every frame: the reading carry is scored against
        units, blendshapes = [], []
        for frame in trajectory_frames(trajectory):
            face = face_track.update(frame)
            if face is not None:
                units.append(encoder.read_batch(crop_face(frame, face.box, encoder.size)[None])[1][0])
                blendshapes.append(face.blendshapes)
        clips.append(ClipReading(np.array(units), np.array(blendshapes)))
    return clips


def changes(clips: list[ClipReading]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of frames GAPS apart: (change in units, change in blendshapes)."""
    units = [c.units[g:] - c.units[:-g] for c in clips for g in GAPS]
    blendshapes = [c.blendshapes[g:] - c.blendshapes[:-g] for c in clips for g in GAPS]
    return np.concatenate(units), np.concatenate(blendshapes)


def ridge(x: np.ndarray, y: np.ndarray, strength: float) -> np.ndarray:
    return np.linalg.solve(x.T @ x + strength * np.eye(x.shape[1]), x.T @ y)


def live_readings(clip: ClipReading, carry: BlendshapeCarry | None) -> tuple[np.ndarray, np.ndarray]:
    """Frames 1.. of a clip as the live path reads them (the last mesh, run every MESH_EVERY
    frames and read from the frame after), held or carried; and the mesh's own reading of each."""
    read = []
    for t in range(1, len(clip.units)):
        mesh = (t - 1) // MESH_EVERY * MESH_EVERY
        held = clip.blendshapes[mesh]
        read.append(held if carry is None else carry.carry(held, clip.units[t], clip.units[mesh]))
    return np.array(read), clip.blendshapes[1:]


def correlations(clips: list[ClipReading], carry: BlendshapeCarry | None) -> np.ndarray:
    """(52,) per-blendshape Pearson r of the live reading with the mesh's every-frame one (NaN
    for a blendshape the mesh never moves)."""
    read, truth = (np.concatenate(parts) for parts in zip(*(live_readings(c, carry) for c in clips), strict=True))
    return column_correlations(read, truth)


def fit(clips: list[ClipReading], strength: float, encoders: tuple[str, ...] = (),
        smile_units: tuple[int, int] | None = None) -> BlendshapeCarry:
    """The ridge map on every clip, keeping only the blendshapes it carries better than holding
    does on the last third of the clips when fitted on the first two; with `smile_units` (the
    lip-corner pulls, left and right), the smile's lift too."""
    split = max(1, len(clips) * 2 // 3)
    trial = BlendshapeCarry(ridge(*changes(clips[:split]), strength))
    kept = correlations(clips[split:], trial) > correlations(clips[split:], None)
    weights = ridge(*changes(clips), strength) * kept
    lift = smile_lift(clips, smile_units) if smile_units else None
    return BlendshapeCarry(weights.astype(np.float32), encoders, lift)


def smile_lift(clips: list[ClipReading], smile_units: tuple[int, int]) -> SmileLift:
    """Per side, the least-squares line of the lip-corner-pull unit on MediaPipe's smile (the
    unit at no smile, and per unit of smile), over every frame of the clips."""
    units = np.concatenate([c.units for c in clips])
    blendshapes = np.concatenate([c.blendshapes for c in clips])
    lines = [np.polyfit(blendshapes[:, b], units[:, u], 1)[::-1] for u, b in zip(smile_units, SMILE_BLENDSHAPES, strict=True)]
    return SmileLift(smile_units, np.array(lines, np.float32))


def score(carry: BlendshapeCarry, clips: list[ClipReading]) -> dict[str, object]:
    held, carried = correlations(clips, None), correlations(clips, carry)
    active = np.concatenate([c.blendshapes for c in clips]).std(0) > ACTIVE
    return {
        "mean_r_active": {"held": round(float(held[active].mean()), 3), "carried": round(float(carried[active].mean()), 3)},
        "active": int(active.sum()),
        "carried_blendshapes": int((np.abs(carry.weights).sum(0) > 0).sum()),
        "r": {n: {"held": round(float(held[i]), 3), "carried": round(float(carried[i]), 3)}
              for n in REPORTED for i in [ARKIT_BLENDSHAPES.index(n)]},
        "frames": int(sum(len(c.units) for c in clips)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=12, help="synthetic training clips (8 s each)")
    parser.add_argument("--test", type=int, default=6, help="held-out clips to score on")
    parser.add_argument("--strength", type=float, default=10.0, help="ridge penalty")
    parser.add_argument("--ship", action="store_true", help=f"write {BLENDSHAPE_CARRY}")
    args = parser.parse_args()
    if args.train < 3 or args.test < 1:
        parser.error("--train needs 3 clips or more (a third of them choose what is carried), --test 1 or more")
    # the blendshapes each mesh serves the carry from: MediaPipe's, jawOpen lifted (no emotion guard)
    encoder, front = OnnxEncoder(ENCODER_INT8_ONNX), FaceFront(emotions=False, jaw_lift=JawLift())
    if not encoder.unit_dim:
        raise SystemExit(f"{ENCODER_INT8_ONNX} has no action-unit read-out to carry blendshapes with")
    encoders = (file_digest(ENCODER_ONNX), file_digest(ENCODER_INT8_ONNX))
    training = read_clips(encoder, front, clip_trajectories(args.train, TRAIN_SEED, held_out=False))
    names = json.loads(ENCODER_UNITS.read_text())["names"]
    carry = fit(training, args.strength, encoders, tuple(names.index(n) for n in LIP_CORNER_PULLS))
    held_out = read_clips(encoder, front, clip_trajectories(args.test, TEST_SEED, held_out=True))
    print(json.dumps({"held_out": score(carry, held_out)}, indent=2))
    if args.ship:
        carry.save(BLENDSHAPE_CARRY)
        print(f"wrote {BLENDSHAPE_CARRY}")


if __name__ == "__main__":
    main()
