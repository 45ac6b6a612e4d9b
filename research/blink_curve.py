"""How the blink curve (`inference.face.blink`) was chosen: on the real-face set's tune split and
on synthetic clips, never on the eval split.

    .venv/bin/python research/blink_curve.py [--clips 8]

The tune faces labelled for closed eyes are read by the live path's analysis without the curve
(`AnalysisOptions(blink_curve=None)`), and synthetic clips of training-range actors by the front
end alone (the mesh on every frame). For each curve on a 0.05 grid: how many tune faces' eyes it
judges right (both lids' mean at least `MOVED` of the way shut on a face labelled closed, less
on one labelled open: `freeavatar eval realface`'s rule), and its mean absolute error against
the synthetic actors' true lid closure (AU45 per side). Of the curves that judge every tune face
right, the one with the least synthetic error is shipped.
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.progress import track

from freeavatar_server.images import decode_image
from freeavatar_server.inference.face.blink import EYE_BLINKS, BlinkCurve
from freeavatar_server.inference.face.front import FaceFront
from freeavatar_server.inference.shipped import ENCODER_INT8_ONNX
from freeavatar_server.live.analysis import Analyser, AnalysisOptions, AnalysisRequest
from freeavatar_server.synth.actors import AU_INDEX
from freeavatar_server.synth.video import trajectory_frames
from freeavatar_server.training.face.blendshape_carry import clip_trajectories
from freeavatar_server.training.realface.evaluate import (
    MOVED,
    SAME_FACE,
    SET_DIR,
    overlap,
    read_labels,
    region,
)

SEED = 48_000_000  # synthetic clips apart from every other set's
LIDS = (AU_INDEX["blink_L"], AU_INDEX["blink_R"])


def tune_blinks() -> tuple[np.ndarray, np.ndarray]:
    """(faces, 2) MediaPipe's blinks as served without the curve, and (faces,) the eyes_closed
    labels, over the tune faces labelled either way and found."""
    analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, blink_curve=None))
    blinks, labels = [], []
    for index, face in enumerate(read_labels()):
        if face.split != "tune" or "eyes_closed" not in face.labels:
            continue
        image, origin = region(decode_image((SET_DIR / "photos" / face.photo).read_bytes()), face.box)
        for _ in range(2):  # a still as a stream's first frames, as the evaluation reads it
            analysis = analyser.analyse(AnalysisRequest(f"face-{index}", image, 0, {}))
        analyser.forget(f"face-{index}")
        if analysis.face is not None and overlap(analysis.face.box, face.box, origin) > SAME_FACE:
            blinks.append(analysis.blendshapes[list(EYE_BLINKS)])
            labels.append(face.labels["eyes_closed"])
    return np.array(blinks), np.array(labels)


def synthetic_blinks(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames, 2) MediaPipe's blinks on synthetic clips, and the actors' (frames, 2) true lid
    closure."""
    front = FaceFront(emotions=False)
    blinks, lids = [], []
    for trajectory in track(clip_trajectories(count, SEED, held_out=False), description="synthetic clips"):
        face_track = front.track()
        for t, frame in enumerate(trajectory_frames(trajectory)):
            face = face_track.update(frame)
            if face is not None:
                blinks.append(face.blendshapes[list(EYE_BLINKS)])
                lids.append(trajectory.expressions[t, list(LIDS)])
    return np.array(blinks), np.array(lids)


def judged_right(curve: BlinkCurve | None, blinks: np.ndarray, labels: np.ndarray) -> int:
    shut = blinks if curve is None else curve.shut(blinks)
    return int(((shut.mean(1) >= MOVED) == (labels == 1)).sum())


def synthetic_error(curve: BlinkCurve | None, blinks: np.ndarray, lids: np.ndarray) -> float:
    shut = blinks if curve is None else curve.shut(blinks)
    return float(np.abs(shut - lids).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8, help="synthetic clips for the tie-break")
    args = parser.parse_args()
    blinks, labels = tune_blinks()
    synthetic, lids = synthetic_blinks(args.clips)
    grid = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    curves = [BlinkCurve(float(lo), float(hi)) for lo in grid for hi in grid if lo < hi]
    print(f"tune faces judged for closed eyes: {len(labels)} ({int(labels.sum())} closed); synthetic frames: {len(lids)}")
    print(f"MediaPipe's own: tune right {judged_right(None, blinks, labels)}, synthetic error {synthetic_error(None, synthetic, lids):.4f}")
    perfect = [c for c in curves if judged_right(c, blinks, labels) == len(labels)]
    perfect.sort(key=lambda c: synthetic_error(c, synthetic, lids))
    print(f"{len(perfect)} of {len(curves)} curves judge every tune face right; the least synthetic error first:")
    for curve in perfect[:8]:
        print(f"  closed_from {curve.closed_from:.2f} closed_at {curve.closed_at:.2f}: synthetic error {synthetic_error(curve, synthetic, lids):.4f}")
    print(f"shipped: {BlinkCurve()}; chosen here: {perfect[0] if perfect else None}")


if __name__ == "__main__":
    main()
