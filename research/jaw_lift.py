"""How the jaw lift's line (`inference.face.jaw`) was fitted: synthetic clips of training-range
actors read by the front end alone (the mesh on every frame), the actors' true jaw drop (AU26)
regressed on the mesh's inner-lip gap by least squares. Nothing is chosen on real faces.

    .venv/bin/python research/jaw_lift.py [--clips 8]

Prints the line, and how well MediaPipe's jawOpen, the gap, and jawOpen as served (raised to the
shipped line, as far as MediaPipe reads no smile) follow the jaw drop (r, and the median reading where the jaw is 0.2-0.4 down).
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.progress import track

from freeavatar_server.inference.face.front import FaceFront
from freeavatar_server.inference.face.jaw import JAW_OPEN, JawLift, lip_gap
from freeavatar_server.synth.actors import AU_INDEX
from freeavatar_server.synth.video import trajectory_frames
from freeavatar_server.training.face.blendshape_carry import clip_trajectories

SEED = 48_000_000  # synthetic clips apart from every other set's but the blink curve's


def read_clips(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame with a face: the mesh's lip gap, MediaPipe's jawOpen, jawOpen lifted by the
    shipped JawLift, the true jaw drop."""
    front, jaw_lift = FaceFront(emotions=False), JawLift()
    gaps, jaw_open, lifted, jaw_drop = [], [], [], []
    for trajectory in track(clip_trajectories(count, SEED, held_out=False), description="synthetic clips"):
        face_track = front.track()
        for t, frame in enumerate(trajectory_frames(trajectory)):
            face = face_track.update(frame)
            if face is not None:
                gaps.append(lip_gap(face.landmarks))
                jaw_open.append(face.blendshapes[JAW_OPEN])
                lifted.append(jaw_lift.lift(face.blendshapes, face.landmarks)[JAW_OPEN])
                jaw_drop.append(trajectory.expressions[t, AU_INDEX["jaw_drop"]])
    return np.array(gaps), np.array(jaw_open), np.array(lifted), np.array(jaw_drop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    args = parser.parse_args()
    gaps, jaw_open, served, jaw_drop = read_clips(args.clips)
    slope, intercept = np.polyfit(gaps, jaw_drop, 1)
    print(f"{len(gaps)} frames; fitted: jaw drop = {intercept:.3f} + {slope:.3f} x lip gap; shipped: {JawLift()}")
    middling = (jaw_drop >= 0.2) & (jaw_drop < 0.4)
    for name, reading in (("MediaPipe's jawOpen", jaw_open), ("lip gap", gaps), ("jawOpen served", served)):
        r = np.corrcoef(reading, jaw_drop)[0, 1]
        print(f"  {name:20s} r {r:.3f} with the jaw drop; median {np.median(reading[middling]):.3f} at a jaw drop of 0.2-0.4")


if __name__ == "__main__":
    main()
