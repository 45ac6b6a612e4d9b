"""The emotion guard (`inference.face.emotion`) on held-out synthetic actors and on the real set,
and what it costs.

    python benchmarks/emotion_guard.py [--actors 300] [--json]

- synthetic: actors of held-out identities, full nuisance, 192 px, each read by a fresh track
  (found, then tracked), with and without the guard: the ARKit smile (the mean of
  mouthSmileLeft and mouthSmileRight) against the actor's true lip-corner pull (AU12), and its
  mean on actors who do not smile; the lowered brows (browDownLeft and Right) against the true
  brow lowerer (AU4) likewise;
- real: the real set's faces labelled with a smile or its absence, by split, with the share of
  MediaPipe's smile the guard keeps; and those labelled with a frown or its absence, with the
  share of the lowered brows it keeps (`freeavatar eval realface` judges what reaches the
  avatars);
- speed: the face cut and the classifier per mesh run, one thread.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from freeavatar_server.images import decode_image
from freeavatar_server.inference.face.emotion import (
    BROW_DOWN,
    SMILE,
    EmotionReader,
    face_crop,
    frown_share,
    guard_blendshapes,
    smile_share,
)
from freeavatar_server.inference.face.front import FaceFront
from freeavatar_server.synth.actors import AU_INDEX
from freeavatar_server.training.animator.data import actor_images
from freeavatar_server.training.realface.evaluate import SET_DIR, read_labels, region

HELD_OUT = 4_000_000  # identities no training set uses
AU12 = [AU_INDEX["lip_corner_pull_L"], AU_INDEX["lip_corner_pull_R"]]
AU4 = [AU_INDEX["brow_lower"]]
# what the guard scales, and the action unit the actor moves it with
GUARDED = {"smile": (SMILE, AU12), "brows_down": (BROW_DOWN, AU4)}


def read_still(front: FaceFront, image: np.ndarray):
    track = front.track()
    track.update(image)
    return track.update(image)


def synthetic(n: int) -> dict[str, object]:
    actors = actor_images(n, identity_offset=HELD_OUT, n_identities=n, seed=11, size=192)
    front = FaceFront(threads=1)
    faces = [read_still(front, image) for image in actors.images]
    found = np.array([f is not None for f in faces])
    out: dict[str, object] = {"actors": n, "found": round(float(found.mean()), 3)}
    for name, guard in (("guarded", True), ("mediapipe", False)):
        read = np.array([
            np.full(52, np.nan) if f is None else guard_blendshapes(f.blendshapes, f.emotions) if guard else f.blendshapes
            for f in faces
        ])  # fmt: skip
        out[name] = {}
        for part, (shapes, units) in GUARDED.items():
            truth, reading = actors.action_units[:, units].mean(1), read[:, shapes].mean(1)
            out[name][part] = {
                "r_with_au": round(float(np.corrcoef(truth[found], reading[found])[0, 1]), 3),
                "mean_when_au_below_0.05": round(float(np.nanmean(reading[truth < 0.05])), 3),
                "mean_when_au_above_0.3": round(float(np.nanmean(reading[truth > 0.3])), 3),
            }
    return out


def real() -> dict[str, object]:
    """Per split, the share of the smile kept on faces smiling, not smiling, and crying or
    grimacing; the share of the lowered brows kept on faces frowning, smiling without a frown,
    and neither."""
    front = FaceFront(threads=1)
    photos: dict[str, np.ndarray] = {}
    out: dict[str, dict[str, dict[str, list[float]]]] = {"smile": {}, "brows_down": {}}
    for face in read_labels():
        labels = face.labels
        if "smile" not in labels and "frown" not in labels:
            continue
        if face.photo not in photos:
            photos[face.photo] = decode_image((SET_DIR / "photos" / face.photo).read_bytes())
        found = read_still(front, region(photos[face.photo], face.box)[0])
        if found is None:
            continue
        if "smile" in labels:
            kind = "smiling" if labels["smile"] else ("crying_or_grimacing" if labels.get("grimace") or "crying" in face.notes else "not_smiling")
            out["smile"].setdefault(face.split, {}).setdefault(kind, []).append(round(smile_share(found.emotions), 2))
        if "frown" in labels:
            kind = "frowning" if labels["frown"] else ("smiling" if labels.get("smile") else "neither")
            out["brows_down"].setdefault(face.split, {}).setdefault(kind, []).append(round(frown_share(found.emotions), 2))
    return {
        part: {split: {kind: sorted(shares) for kind, shares in kinds.items()} for split, kinds in sorted(splits.items())}
        for part, splits in out.items()
    }


def speed(repeats: int = 200) -> dict[str, float]:
    from skimage import data

    photo = data.astronaut()
    face = read_still(FaceFront(threads=1, emotions=False), photo)
    reader = EmotionReader(threads=1)
    out = {}
    for name, step in (("face_cut_ms", lambda: face_crop(photo, face.landmarks)), ("cut_and_classify_ms", lambda: reader.read(photo, face.landmarks))):
        for _ in range(20):
            step()
        rounds = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                step()
            rounds.append((time.perf_counter() - start) / repeats * 1000)
        out[name] = round(float(np.median(rounds)), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {"synthetic": synthetic(args.actors), "real_share_kept": real(), "speed": speed()}
    if args.json:
        print(json.dumps(report))
        return
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
