"""Expression comparison triplets in the style of Google's FEC data set, and its CSV layout.

A triplet is three faces of three different identities and poses; the label names the face
whose expression is least like the other two. Labels come from ground-truth action-unit
distance, with a configurable share of ambiguous triplets (the two closest pairs are nearly
tied, as when human annotators disagree) and of flipped labels (annotator noise).

FEC CSV layout (one triplet per row, no header), as in Google's release:

    image1, tl_col1, br_col1, tl_row1, br_row1,
    image2, tl_col2, br_col2, tl_row2, br_row2,
    image3, tl_col3, br_col3, tl_row3, br_row3,
    triplet_type, annotator_id_1, annotation_1, annotator_id_2, annotation_2, ...

Image fields are URLs in the real set (local paths after download); face boxes are fractions of
the image width (columns) and height (rows); triplet_type is ONE_CLASS_TRIPLET,
TWO_CLASS_TRIPLET or THREE_CLASS_TRIPLET; each annotation (1, 2 or 3) is the image whose
expression is most different from the other two. `read_fec_csv` reads the real files as well.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import numpy as np

from freeavatar_server.synth.actors import (
    AU_INDEX,
    N_AU,
    PROTOTYPES,
    mirror_permutation,
    prototype_vector,
    render_faces,
    sample_poses,
)

TRIPLET_KINDS = ("ONE_CLASS_TRIPLET", "TWO_CLASS_TRIPLET", "THREE_CLASS_TRIPLET")
# Relative margin between the closest and the second-closest pair below which a triplet is
# ambiguous, and above which it is clear (the gap keeps the two groups apart).
AMBIGUOUS_MARGIN = 0.08
CLEAR_MARGIN = 0.15


@dataclass(frozen=True)
class TripletFace:
    identity_id: int
    expression: tuple[float, ...]  # N_AU action units in [0, 1]
    pose: tuple[float, float, float]  # yaw, pitch, roll in degrees
    seed: int  # the face's own nuisance seed (lighting, background, blur, ...)


@dataclass(frozen=True)
class Triplet:
    faces: tuple[TripletFace, TripletFace, TripletFace]
    kind: str  # one of TRIPLET_KINDS
    odd_one: int  # 0/1/2: the face labelled least like the other two (possibly noisy)
    ambiguous: bool  # the two closest pairs are nearly tied
    true_odd_one: int  # from ground-truth expression distance
    annotations: tuple[int, ...] = field(default=())  # every annotator's odd one (0-based)

    @property
    def expressions(self) -> np.ndarray:
        return np.array([f.expression for f in self.faces], dtype=np.float32)


def expression_distances(expr: np.ndarray) -> np.ndarray:
    """(3,) ground-truth distances of the pairs (1,2), (0,2), (0,1): entry k is the pair
    that excludes face k, so argmin gives the odd one out."""
    e = np.asarray(expr, dtype=np.float64)
    return np.array(
        [np.linalg.norm(e[1] - e[2]), np.linalg.norm(e[0] - e[2]), np.linalg.norm(e[0] - e[1])]
    )


def odd_one_out(expr: np.ndarray) -> tuple[int, float, int]:
    """(odd one, relative margin of the decision, runner-up odd one) from AU distance."""
    d = expression_distances(expr)
    order = np.argsort(d, kind="stable")
    margin = (d[order[1]] - d[order[0]]) / (d.max() + 1e-6)
    return int(order[0]), float(margin), int(order[1])


def class_sample(name: str, rng: np.random.Generator, min_intensity: float = 0.35) -> np.ndarray:
    """One expression of a class: a prototype (or neutral) at a random intensity from
    `min_intensity` to 1 with per-AU jitter, a stray AU now and then, mirrored half the time."""
    if name == "neutral":
        vec = rng.uniform(0, 0.1, N_AU) * (rng.random(N_AU) < 0.2)
    else:
        vec = prototype_vector(name) * rng.uniform(min_intensity, 1.0) * rng.uniform(0.7, 1.3, N_AU)
        vec = vec + rng.uniform(0, 0.25, N_AU) * (rng.random(N_AU) < 0.08)
    if rng.random() < 0.5:
        vec = vec[mirror_permutation()]
    if rng.random() < 0.06:
        vec[AU_INDEX["blink_L"]] = vec[AU_INDEX["blink_R"]] = rng.uniform(0.7, 1.0)
    return np.clip(vec, 0, 1).astype(np.float32)


def _candidate(kind: str, rng: np.random.Generator) -> np.ndarray:
    classes = ["neutral", *PROTOTYPES]
    picks = rng.choice(len(classes), size=3, replace=False)
    if kind == "ONE_CLASS_TRIPLET":
        names = [classes[picks[0]]] * 3
    elif kind == "TWO_CLASS_TRIPLET":
        names = [classes[picks[0]], classes[picks[0]], classes[picks[1]]]
    else:
        names = [classes[i] for i in picks]
    order = rng.permutation(3)
    return np.stack([class_sample(names[i], rng) for i in order])


def make_triplets(
    n: int,
    *,
    seed: int,
    identity_ids: range | np.ndarray | Sequence[int],
    ambiguous_share: float = 0.2,
    label_noise: float = 0.05,
    ambiguous_flip: float = 0.35,
    n_annotators: int = 1,
    kinds: Sequence[float] = (0.3, 0.4, 0.3),
) -> list[Triplet]:
    """n triplets with three different identities and poses each, labelled from ground truth.

    `ambiguous_share` of them have nearly tied closest pairs (relative margin <
    AMBIGUOUS_MARGIN), the rest a clear answer (margin > CLEAR_MARGIN). Each annotator keeps
    the true answer except with probability `label_noise` (clear triplets) or `ambiguous_flip`
    (ambiguous ones, where the flip goes to the runner-up, as a person torn between two would);
    `odd_one` is the annotators' majority. With label_noise = ambiguous_flip = 0 every label
    equals `true_odd_one`. `kinds` weights ONE/TWO/THREE_CLASS triplets as in FEC.
    """
    ids = np.asarray(identity_ids, dtype=np.int64)
    if len(ids) < 3:
        raise ValueError("need at least three identities for a triplet")
    if not 0.0 <= ambiguous_share <= 1.0:
        raise ValueError("ambiguous_share must be in [0, 1]")
    rng = np.random.default_rng(seed)
    n_amb = round(n * ambiguous_share)
    want = [True] * n_amb + [False] * (n - n_amb)
    rng.shuffle(want)
    out: list[Triplet] = []
    for ambiguous in want:
        kind, expr, truth, runner_up = _draw_expressions(ambiguous, rng, kinds)
        idx = rng.choice(len(ids), size=3, replace=False)
        face_seeds = rng.integers(0, 2**62, size=3)
        poses = sample_poses(face_seeds)
        faces = tuple(
            TripletFace(int(ids[idx[k]]), tuple(float(x) for x in expr[k]),
                        tuple(float(x) for x in poses[k]), int(face_seeds[k]))
            for k in range(3)
        )  # fmt: skip
        flip = ambiguous_flip if ambiguous else label_noise
        votes = tuple(
            _annotate(truth, runner_up, ambiguous, flip, rng) for _ in range(n_annotators)
        )
        out.append(Triplet(
            faces=faces, kind=kind, odd_one=_majority(votes), ambiguous=ambiguous,
            true_odd_one=truth, annotations=votes,
        ))  # fmt: skip
    return out


def _draw_expressions(
    ambiguous: bool, rng: np.random.Generator, kinds: Sequence[float]
) -> tuple[str, np.ndarray, int, int]:
    """Expressions of a triplet of a random FEC kind (by the classes the faces were drawn
    from) with the requested ambiguity, its true odd one and the runner-up."""
    p = np.asarray(kinds, dtype=np.float64) / np.sum(kinds)
    for _ in range(10_000):
        kind = TRIPLET_KINDS[rng.choice(3, p=p)]
        expr = _candidate(kind, rng)
        if ambiguous:
            expr = _nudge_towards_tie(expr, rng)
        truth, margin, runner_up = odd_one_out(expr)
        if (margin < AMBIGUOUS_MARGIN) if ambiguous else (margin > CLEAR_MARGIN):
            return kind, expr, truth, runner_up
    raise RuntimeError("could not draw a triplet with the requested ambiguity")


def _nudge_towards_tie(expr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move one face to about the same distance from the other two: a near tie."""
    k = rng.integers(3)
    a, b = [i for i in range(3) if i != k]
    mid = (expr[a] + expr[b]) / 2
    out = expr.copy()
    out[k] = np.clip(mid + (expr[k] - mid) * rng.uniform(0.5, 1.0), 0, 1)
    return out


def _annotate(
    truth: int, runner_up: int, ambiguous: bool, flip: float, rng: np.random.Generator
) -> int:
    if rng.random() >= flip:
        return truth
    if ambiguous:
        return runner_up
    return int(rng.choice([i for i in range(3) if i != truth]))


def _majority(votes: Sequence[int]) -> int:
    counts = np.bincount(np.asarray(votes), minlength=3)
    return int(votes[0]) if counts.max() == 1 and len(votes) > 1 else int(np.argmax(counts))


def render_triplets(
    triplets: Sequence[Triplet], *, size: int = 128, nuisance: bool = True
) -> np.ndarray:
    """(n, 3, size, size, 3) uint8 crops; each face keeps its own pose and nuisance seed."""
    return _render_faces(triplets, size, nuisance).images.reshape(len(triplets), 3, size, size, 3)


def _render_faces(triplets: Sequence[Triplet], size: int, nuisance: bool):  # -> FaceBatch
    faces = [f for t in triplets for f in t.faces]
    return render_faces(
        np.array([f.expression for f in faces], dtype=np.float32).reshape(-1, N_AU),
        np.array([f.identity_id for f in faces], dtype=np.int64),
        size=size,
        poses=np.array([f.pose for f in faces], dtype=np.float32).reshape(-1, 3),
        nuisance=nuisance,
        sample_seeds=np.array([f.seed for f in faces], dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------------
# FEC CSV


@dataclass(frozen=True)
class FecImage:
    """One image of an FEC row: where it is and the face box as fractions of width/height."""

    path: str  # URL in the real set, a path (absolute or relative to the CSV) locally
    top_left_col: float
    bottom_right_col: float
    top_left_row: float
    bottom_right_row: float

    def box_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) pixel box for PIL's crop."""
        return (
            round(self.top_left_col * width), round(self.top_left_row * height),
            round(self.bottom_right_col * width), round(self.bottom_right_row * height),
        )  # fmt: skip


@dataclass(frozen=True)
class FecRow:
    images: tuple[FecImage, FecImage, FecImage]
    triplet_type: str
    annotations: tuple[tuple[str, int], ...]  # (annotator id, 1-based most-different image)

    def odd_one_votes(self) -> np.ndarray:
        """(3,) vote counts for each image being the odd one out."""
        return np.bincount([a - 1 for _, a in self.annotations], minlength=3)[:3]

    def odd_one(self) -> int:
        """0-based majority odd one (ties -> lowest index)."""
        return int(np.argmax(self.odd_one_votes()))


def write_fec_csv(path: str | os.PathLike[str], rows: Iterable[FecRow]) -> None:
    """Write rows in FEC's layout (no header, quoted strings, 6-digit box fractions)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        for row in rows:
            fields: list[object] = []
            for im in row.images:
                fields += [
                    im.path,
                    round(im.top_left_col, 6),
                    round(im.bottom_right_col, 6),
                    round(im.top_left_row, 6),
                    round(im.bottom_right_row, 6),
                ]
            fields.append(row.triplet_type)
            for annotator, annotation in row.annotations:
                fields += [annotator, int(annotation)]
            writer.writerow(fields)


def read_fec_csv(path: str | os.PathLike[str]) -> list[FecRow]:
    """Read an FEC-layout CSV (Google's train/test files or ours); skips blank lines.

    Raises ValueError naming the line for a malformed row.
    """
    rows: list[FecRow] = []
    with open(path, newline="") as f:
        for line_no, fields in enumerate(csv.reader(f), start=1):
            fields = [x.strip() for x in fields]
            if not fields or all(not x for x in fields):
                continue
            try:
                rows.append(_parse_row(fields))
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{line_no}: not an FEC row: {exc}") from None
    return rows


def _parse_row(fields: list[str]) -> FecRow:
    if len(fields) < 16 or (len(fields) - 16) % 2:
        raise ValueError(f"expected 16 + 2k fields, got {len(fields)}")
    images = tuple(
        FecImage(fields[5 * i], *(float(fields[5 * i + j]) for j in range(1, 5))) for i in range(3)
    )
    kind = fields[15]
    if kind not in TRIPLET_KINDS:
        raise ValueError(f"unknown triplet type {kind!r}")
    pairs = []
    for i in range(16, len(fields), 2):
        annotation = int(float(fields[i + 1]))
        if annotation not in (1, 2, 3):
            raise ValueError(f"annotation {annotation} is not 1, 2 or 3")
        pairs.append((fields[i], annotation))
    row_images: tuple[FecImage, FecImage, FecImage] = images  # type: ignore[assignment]
    return FecRow(images=row_images, triplet_type=kind, annotations=tuple(pairs))


def resolve_image(
    row_image: FecImage,
    csv_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Local file of an FEC image.

    Absolute paths are used as they are; relative ones are looked up beside the CSV (or under
    `image_root`). URLs, as in Google's release, map to `image_root` / the URL's file name:
    download the images once, keep their names, and the original CSV reads unchanged.
    """
    path = row_image.path
    root = Path(csv_path).parent if image_root is None else Path(image_root)
    if "://" in path:
        return root / PurePosixPath(urlsplit(path).path).name
    p = Path(path)
    return p if p.is_absolute() else root / p


def load_fec_face(
    row_image: FecImage,
    csv_path: str | os.PathLike[str],
    size: int = 128,
    image_root: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """(size, size, 3) uint8 face crop of one FEC image (its box, resized)."""
    from PIL import Image

    with Image.open(resolve_image(row_image, csv_path, image_root)) as im:
        im = im.convert("RGB")
        crop = im.crop(row_image.box_pixels(*im.size)).resize((size, size), Image.BILINEAR)
        return np.asarray(crop)


def export_triplets(
    triplets: Sequence[Triplet],
    out_dir: str | os.PathLike[str],
    *,
    size: int = 128,
    nuisance: bool = True,
    csv_name: str = "triplets.csv",
) -> Path:
    """Materialise triplets as PNGs + an FEC CSV (+ a ground-truth JSON beside it).

    Writes out_dir/images/{i:06d}_{k}.png, out_dir/<csv_name> with relative image paths, face
    boxes from the renderer and one annotation per annotator, and out_dir/<stem>_truth.json with
    each triplet's expressions, poses, identities, true odd one and ambiguity. Returns the CSV.
    """
    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    batch = _render_faces(triplets, size, nuisance)
    rows, truth = [], []
    for i, t in enumerate(triplets):
        images = []
        for k in range(3):
            j = 3 * i + k
            rel = f"images/{i:06d}_{k}.png"
            Image.fromarray(batch.images[j]).save(out / rel)
            x0, y0, x1, y1 = np.clip(batch.boxes[j] / size, 0.0, 1.0)
            images.append(FecImage(rel, float(x0), float(x1), float(y0), float(y1)))
        votes = t.annotations or (t.odd_one,)
        rows.append(FecRow(
            images=tuple(images), triplet_type=t.kind,  # type: ignore[arg-type]
            annotations=tuple((f"synth{a}", v + 1) for a, v in enumerate(votes)),
        ))  # fmt: skip
        truth.append({
            "true_odd_one": t.true_odd_one, "odd_one": t.odd_one, "ambiguous": t.ambiguous,
            "kind": t.kind, "faces": [
                {"identity_id": f.identity_id, "expression": list(f.expression),
                 "pose": list(f.pose), "seed": f.seed} for f in t.faces
            ],
        })  # fmt: skip
    csv_path = out / csv_name
    write_fec_csv(csv_path, rows)
    (out / f"{csv_path.stem}_truth.json").write_text(json.dumps(truth))
    return csv_path
