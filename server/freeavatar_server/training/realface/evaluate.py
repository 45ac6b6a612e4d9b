"""Do the avatars move the right way for a real person? The live path's own analysis (front
end, encoder, animators, each binding's expression reader) on the real-face set, judged against
what is plainly visible in each photo (labels.csv), beside MediaPipe's blendshapes read alone.

For each labelled face the photo is cut to a square around the face (2.2 face widths, so one
face fills the view in group photos) and read as a still shown twice (found, then tracked, as
the first frames of a stream), and counts as found when the face read is the labelled one (its
box overlaps the label's). A label's controls "move" when they go at least `MOVED` of the way
from rest towards the end the label moves them to (on average, or any one of them for a label
in `ANY_OF`); a face labelled 1 should move them, a face labelled 0 should
not, and a neutral face should move none of them. Faces whose label is blank are not judged.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from freeavatar._proto import stream_pb2
from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.images import decode_image
from freeavatar_server.inference.face.front import FaceFront
from freeavatar_server.inference.shipped import ANIMATOR_DIR, ENCODER_INT8_ONNX
from freeavatar_server.live.analysis import Analyser, AnalysisOptions, AnalysisRequest, AnimatorRef
from freeavatar_server.live.sessions import Binding
from freeavatar_server.synth.avatars import BUILTIN_AVATARS

SET_DIR = Path(__file__).resolve().parent
LABELS = ("smile", "mouth_open", "eyes_closed", "brows_raised", "frown")
# share of a control's range above rest that counts as moving: chosen on the tune split, then
# kept fixed so that figures stay comparable between models (the tune split's best now:
# `choose_threshold`)
MOVED = 0.2
REGION = 2.2  # the square cut around a labelled face, in face widths
SAME_FACE = 0.5  # the face read overlaps the labelled one this much: the same face
MEDIAPIPE = "mediapipe"  # MediaPipe's own blendshapes (no emotion guard), read as the ARKit avatar would be

# What a label moves on each built-in avatar: (control, direction). Chosen from what each
# control draws (docs/synthetic.png), like a person describing the avatars would.
EXPECTED: dict[str, dict[str, tuple[tuple[str, int], ...]]] = {
    "smile": {
        "human_arkit": (("mouthSmileLeft", 1), ("mouthSmileRight", 1)),
        "cartoon": (("grin", 1),),
        "robot": (("mouth_curve", 1),),
        "cat": (("mouth_curve", 1),),
    },
    "mouth_open": {
        "human_arkit": (("jawOpen", 1), ("mouthLowerDownLeft", 1), ("mouthLowerDownRight", 1),
                        ("mouthUpperUpLeft", 1), ("mouthUpperUpRight", 1)),
        "cartoon": (("mouth_open", 1),),
        "robot": (("mouth_open", 1),),
        "cat": (("jaw_open", 1),),
    },
    "eyes_closed": {
        "human_arkit": (("eyeBlinkLeft", 1), ("eyeBlinkRight", 1)),
        "cartoon": (("blink_L", 1), ("blink_R", 1)),
        "robot": (("eye_squint", 1),),
        "cat": (("blink_L", 1), ("blink_R", 1)),
    },
    "brows_raised": {
        "human_arkit": (("browInnerUp", 1), ("browOuterUpLeft", 1), ("browOuterUpRight", 1)),
        "cartoon": (("brows_up", 1),),
        "robot": (("brow_tilt", -1),),
        "cat": (("brows", 1),),
    },
    "frown": {
        "human_arkit": (("browDownLeft", 1), ("browDownRight", 1)),
        "cartoon": (("brows_angry", 1),),
        "robot": (("brow_tilt", 1),),
        "cat": (("brows", -1),),
    },
}  # fmt: skip


@dataclass(frozen=True)
class LabelledFace:
    photo: str
    box: tuple[float, float, float, float]
    split: str
    labels: dict[str, int]  # label -> 0 or 1 (blank labels are absent)
    notes: str


def read_labels(path: Path = SET_DIR / "labels.csv") -> list[LabelledFace]:
    faces = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            labels = {k: int(row[k]) for k in (*LABELS, "neutral", "grimace") if row.get(k, "").strip()}
            box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            faces.append(LabelledFace(row["photo"], box, row["split"], labels, row.get("notes", "")))
    return faces


def region(image: np.ndarray, box: tuple[float, float, float, float]) -> tuple[np.ndarray, tuple[int, int]]:
    """The square around a face (clamped to the photo), so the front end sees that face, and
    where its top-left corner lies in the photo."""
    x0, y0, x1, y1 = box
    half = REGION * max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = image.shape[:2]
    left, top = int(max(0, cx - half)), int(max(0, cy - half))
    right, bottom = int(min(w, cx + half)), int(min(h, cy + half))
    return np.ascontiguousarray(image[top:bottom, left:right]), (left, top)


def overlap(found: tuple[float, ...], labelled: tuple[float, ...], origin: tuple[int, int]) -> float:
    """Intersection over the smaller box, of the face read (region pixels) and the labelled one
    (photo pixels): the boxes frame a face differently, so IoU would undersell a match."""
    ox, oy = origin
    a = np.array(found, np.float64) + [ox, oy, ox, oy]
    b = np.array(labelled, np.float64)
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller if smaller > 0 else 0.0


@dataclass
class FaceResult:
    face: LabelledFace
    found: bool
    rigs: dict[str, np.ndarray]  # reader/avatar key -> controls ("cartoon", "cartoon/animator", "mediapipe")
    image: np.ndarray = field(repr=False)


def bindings(reader: int) -> dict[str, Binding]:
    return {
        name: Binding.resolve(stream_pb2.AvatarBinding(avatar_id=name, reader=reader), avatar.spec)
        for name, avatar in BUILTIN_AVATARS.items()
    }


def read_faces(faces: list[LabelledFace], animator_dir: Path = ANIMATOR_DIR, encoder: Path = ENCODER_INT8_ONNX) -> list[FaceResult]:
    """Every face through the live path's analysis, under the default reader and the animator
    alone, and MediaPipe's blendshapes by themselves (no emotion guard)."""
    analyser = Analyser(AnalysisOptions(encoder))
    mediapipe = FaceFront(emotions=False)
    animators = {name: AnimatorRef(str(animator_dir), name) for name in BUILTIN_AVATARS}
    readers = {"": bindings(stream_pb2.EXPRESSION_READER_AUTO), "/animator": bindings(stream_pb2.EXPRESSION_READER_ANIMATOR)}
    photos: dict[str, np.ndarray] = {}
    results = []
    for index, face in enumerate(faces):
        if face.photo not in photos:
            photos[face.photo] = decode_image((SET_DIR / "photos" / face.photo).read_bytes())
        image, origin = region(photos[face.photo], face.box)
        key = f"face-{index}"
        for _ in range(2):  # a still as a stream's first frames: found, then tracked
            analysis = analyser.analyse(AnalysisRequest(key, image, 0, animators))
        analyser.forget(key)
        rigs: dict[str, np.ndarray] = {}
        found = analysis.face is not None and overlap(analysis.face.box, face.box, origin) > SAME_FACE
        if found:
            for suffix, by_avatar in readers.items():
                for name, binding in by_avatar.items():
                    values = binding.read(analysis.raw.get(name), analysis.blendshapes)
                    if values is not None:
                        rigs[name + suffix] = values
            track = mediapipe.track()
            for _ in range(2):
                alone = track.update(image)
            if alone is not None and overlap(alone.box, face.box, origin) > SAME_FACE:
                rigs[MEDIAPIPE] = alone.blendshapes
        results.append(FaceResult(face, found, rigs, image))
    return results


# Labels that show when any one of their controls moves; the others need all of them (a smile
# lifts both corners, raised brows lift inner and outer brows, closed eyes close both lids).
ANY_OF = frozenset({"mouth_open"})  # the jaw drops, or the lips part over the teeth


def movement(values: np.ndarray, avatar: str, controls: tuple[tuple[str, int], ...], any_of: bool = False) -> float:
    """How far a label's controls moved from rest towards the end the label moves them to, in
    shares of that half-range: their mean, or with `any_of` the most any of them moved."""
    spec = BUILTIN_AVATARS[avatar].spec if avatar in BUILTIN_AVATARS else None
    moved = []
    for control, direction in controls:
        if spec is None:  # MediaPipe's blendshapes: ARKit names, 0 at rest, range 1
            moved.append(direction * float(values[ARKIT_BLENDSHAPES.index(control)]))
            continue
        i = spec.control_names.index(control)
        c = spec.controls[i]
        # the share of the way from rest to the end the label moves it towards
        reach = (c.max - c.default) if direction > 0 else (c.default - c.min)
        moved.append(direction * (float(values[i]) - c.default) / max(reach, 1e-6))
    return float(np.max(moved) if any_of else np.mean(moved))


@dataclass
class Judged:
    right: int = 0
    judged: int = 0

    def add(self, right: bool) -> None:
        self.right += right
        self.judged += 1

    @property
    def share(self) -> float | None:
        return round(self.right / self.judged, 3) if self.judged else None


def _sum(parts: list[Judged]) -> Judged:
    return Judged(sum(j.right for j in parts), sum(j.judged for j in parts))


@dataclass
class Tally:
    """One reader/avatar's judgements: moved when the photo shows the label (`shown`), stayed
    when it plainly does not (`absent`); a neutral face should move nothing."""

    shown: dict[str, Judged] = field(default_factory=lambda: {label: Judged() for label in LABELS})
    absent: dict[str, Judged] = field(default_factory=lambda: {label: Judged() for label in LABELS})
    neutral: Judged = field(default_factory=Judged)
    # a crying or grimacing face that does not smile must not smile on the avatar (MediaPipe's
    # blendshapes read a grimace's stretched mouth as a smile): already among `absent` smiles,
    # counted apart because telling the two apart is what a reader is for
    grimace_not_smiling: Judged = field(default_factory=Judged)

    def add(self, labels: dict[str, int], moved: dict[str, bool]) -> None:
        if labels.get("grimace") == 1 and labels.get("smile") == 0:
            self.grimace_not_smiling.add(not moved["smile"])
        for label, truth in labels.items():
            if label == "grimace":
                continue
            if label == "neutral":
                if truth == 1:
                    self.neutral.add(not any(moved.values()))
            elif truth == 1:
                self.shown[label].add(moved[label])
            else:
                self.absent[label].add(not moved[label])

    def balanced(self) -> float:
        """The mean of moving when shown and staying when absent (an avatar that never moves
        scores 0.5, however many absent labels there are)."""
        shown = _sum(list(self.shown.values())).share or 0.0
        still = _sum([*self.absent.values(), self.neutral]).share or 0.0
        return round((shown + still) / 2, 3)

    def to_json(self) -> dict[str, object]:
        total = _sum([*self.shown.values(), *self.absent.values(), self.neutral])
        return {
            "right_way": total.share,
            "judged": total.judged,
            "balanced": self.balanced(),
            "moved_when_shown": {k: [j.right, j.judged] for k, j in self.shown.items() if j.judged},
            "still_when_absent": {k: [j.right, j.judged] for k, j in self.absent.items() if j.judged},
            "neutral_still": [self.neutral.right, self.neutral.judged],
            "grimace_not_smiling": [self.grimace_not_smiling.right, self.grimace_not_smiling.judged],
        }


def tally(results: list[FaceResult], moved_at: float = MOVED) -> dict[str, Tally]:
    """Per reader/avatar key, how each labelled face moved it."""
    tallies: dict[str, Tally] = {}
    for result in results:
        for key, values in result.rigs.items():
            avatar = "human_arkit" if key == MEDIAPIPE else key.split("/")[0]
            moved = {label: movement(values, avatar, EXPECTED[label][avatar], label in ANY_OF) >= moved_at for label in LABELS}
            tallies.setdefault(key, Tally()).add(result.face.labels, moved)
    return tallies


def frozen_controls(results: list[FaceResult]) -> dict[str, list[str]]:
    """Per built-in avatar (default reader), the controls that never moved across the set."""
    frozen = {}
    for name, avatar in BUILTIN_AVATARS.items():
        stack = np.array([r.rigs[name] for r in results if name in r.rigs])
        if len(stack):
            frozen[name] = [c for c, s in zip(avatar.spec.control_names, stack.std(0), strict=True) if s < 1e-4]
    return frozen


def threshold_score(results: list[FaceResult], moved_at: float) -> float:
    """The default readers' mean balanced score on these faces, judged at `moved_at`."""
    tallies = tally(results, moved_at)
    return float(np.mean([t.balanced() for k, t in tallies.items() if "/" not in k and k != MEDIAPIPE]))


def choose_threshold(results: list[FaceResult], candidates: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)) -> float:
    """The `MOVED` that judges the default readers best on these faces (give it the tune split)."""
    return max(candidates, key=lambda moved_at: threshold_score(results, moved_at))


@dataclass(frozen=True)
class RealFaceReport:
    split: str
    faces: int
    found: float
    readers: dict[str, object]
    frozen_controls: dict[str, list[str]]
    moved_threshold: float = MOVED

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def evaluate(split: str = "eval", moved_at: float = MOVED) -> tuple[RealFaceReport, list[FaceResult]]:
    results = read_faces([f for f in read_labels() if split == "all" or f.split == split])
    return report_of(split, results, moved_at), results


def report_of(split: str, results: list[FaceResult], moved_at: float = MOVED) -> RealFaceReport:
    """The report on the faces of `split` ("all": every face) among `results`."""
    results = [r for r in results if split == "all" or r.face.split == split]
    readers = {key: t.to_json() for key, t in sorted(tally(results, moved_at).items())}
    found = sum(r.found for r in results) / max(len(results), 1)
    return RealFaceReport(split, len(results), round(found, 3), readers, frozen_controls(results), moved_at)


def contact_sheet(results: list[FaceResult], size: int = 96) -> np.ndarray:
    """One row per face: the face as the front end saw it, then each built-in avatar drawn by
    its reference renderer from the controls the live path gave it (blank when not found)."""
    rows = []
    for result in results:
        tiles = [_square(result.image, size)]
        for name, avatar in BUILTIN_AVATARS.items():
            values = result.rigs.get(name, np.asarray(avatar.spec.defaults, np.float32))
            tile = avatar.render(values[None], size)[0]
            tiles.append(tile if name in result.rigs else (tile // 3))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def _square(image: np.ndarray, size: int) -> np.ndarray:
    import cv2  # lazy: only the picture needs the resize

    h, w = image.shape[:2]
    side = max(h, w)
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = image
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
