"""How the rig controls' One Euro filter (`live.smoothing`) trades lag for jitter, per built-in
avatar, on synthetic clips read as the live path reads them: the mesh every other frame with
its blendshapes carried between meshes (`inference.face.carry`), the shipped animator on every
frame's action units, each avatar's default reader. Scored against the actor's true rig.

    .venv/bin/python research/smoothing_sweep.py [--clips 12]

r: mean per-control correlation with the true rig (controls that move); blink: the ARKit
avatar's eyeBlinkLeft; still: mean frame-to-frame change, in shares of each control's range, on
frames where the true rig stands still (what jitter the filter lets through).
"""

from __future__ import annotations

import argparse

import numpy as np

from freeavatar._proto import stream_pb2
from freeavatar_server.inference.animator import AnimatorRuntime
from freeavatar_server.inference.encoder import OnnxEncoder
from freeavatar_server.inference.face.carry import BlendshapeCarry
from freeavatar_server.inference.face.front import FaceFront
from freeavatar_server.inference.shipped import ANIMATOR_DIR, ENCODER_INT8_ONNX
from freeavatar_server.live.sessions import Binding
from freeavatar_server.live.smoothing import OneEuroFilter
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.correlation import column_correlations
from freeavatar_server.training.face.blendshape_carry import (
    FPS,
    MESH_EVERY,
    clip_trajectories,
    read_clips,
)

SEED = 45_000_000  # clips apart from the carry's fit and test clips
SETTINGS = ((0.5, 1.0), (2.0, 1.0), (2.0, 3.0), (5.0, 1.0), (5.0, 3.0))  # (beta, speed cutoff Hz)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12)
    args = parser.parse_args()
    encoder, front = OnnxEncoder(ENCODER_INT8_ONNX), FaceFront(emotions=False)  # it predates the emotion guard
    carry, animator = BlendshapeCarry.load(), AnimatorRuntime.load(ANIMATOR_DIR)
    trajectories = clip_trajectories(args.clips, SEED, held_out=False)
    clips = read_clips(encoder, front, trajectories)
    truths = [trajectory.expressions for trajectory in trajectories]
    for clip, truth in zip(clips, truths, strict=True):
        if len(clip.units) != len(truth):
            raise SystemExit("a clip lost its face on some frames: its frames no longer line up with the truth")
    for beta, cutoff in SETTINGS:
        line = []
        for name, avatar in BUILTIN_AVATARS.items():
            binding = Binding.resolve(stream_pb2.AvatarBinding(avatar_id=name), avatar.spec)
            span = np.array([c.max - c.min for c in avatar.spec.controls])
            read, want, still = [], [], []
            for clip, aus in zip(clips, truths, strict=True):
                animated = animator.predict(np.zeros((len(clip.units), 0), np.float32), name, units=clip.units)
                smooth = OneEuroFilter(beta=beta, derivative_cutoff_hz=cutoff)
                out = []
                for t in range(1, len(clip.units)):
                    mesh = (t - 1) // MESH_EVERY * MESH_EVERY
                    blendshapes = carry.carry(clip.blendshapes[mesh], clip.units[t], clip.units[mesh])
                    out.append(smooth(binding.read(animated[t], blendshapes), t / FPS))
                out, true_rig = np.array(out), avatar.expected_rig(aus[1:])
                standing = (np.abs(np.diff(true_rig, axis=0)) / span).max(1) < 1e-3
                still.append((np.abs(np.diff(out, axis=0)) / span)[standing])
                read.append(out)
                want.append(true_rig)
            r = column_correlations(np.concatenate(read), np.concatenate(want))
            moves = np.concatenate(want).std(0) > 1e-3
            extra = ""
            if name == "human_arkit":
                extra = f" blink {r[avatar.spec.control_names.index('eyeBlinkLeft')]:.3f}"
            line.append(f"{name} r {r[moves].mean():.3f}{extra} still {np.concatenate(still).mean() * 100:.2f}%")
        print(f"beta {beta:g} speed cutoff {cutoff:g} Hz: " + "  ".join(line), flush=True)


if __name__ == "__main__":
    main()
