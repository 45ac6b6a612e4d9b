"""Data for the expression encoder. Every source ends up as the same two things:

- a `FacePool`: face crops (N, S, S, 3) uint8, with ground truth beside them when it exists
  (synthetic world) and without it otherwise (image folders, video files, FEC images);
- a `TripletSet`: rows of three pool indices and the label "which face is most different"
  (FEC layout), from an FEC CSV or from the synthetic world's annotator simulation.

Synthetic training data is not a pool: a `SyntheticStream` renders fresh faces for every step
in a child process, and the simulated annotator labels every clear triplet among them from
ground-truth action units (the AUs only label, they are never an input to the encoder).
Real data (a folder for MAE, an FEC CSV for triplets) goes through the same training stages.
"""

from __future__ import annotations

import csv
import queue as queues
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm"}

# FEC triplet types -> margin of the symmetric triplet loss (FECNet / FreeAvatar scheme).
ONE_CLASS, TWO_CLASS, THREE_CLASS = 1, 2, 3
KIND_NAMES = {"ONE_CLASS_TRIPLET": ONE_CLASS, "TWO_CLASS_TRIPLET": TWO_CLASS, "THREE_CLASS_TRIPLET": THREE_CLASS}
MARGINS = {ONE_CLASS: 0.1, TWO_CLASS: 0.2, THREE_CLASS: 0.2}


@dataclass
class FacePool:
    """Face crops and, for synthetic faces, the ground truth beside them."""

    images: np.ndarray  # (N, S, S, 3) uint8
    expressions: np.ndarray | None = None  # (N, n_au) float32, synthetic only
    identity_ids: np.ndarray | None = None  # (N,) int64, synthetic only
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class TripletSet:
    """Triplets over a pool: `index` (T, 3) rows into pool.images, `odd` (T,) the face labelled
    most different (0/1/2, possibly noisy), `kind` (T,) 1/2/3-class, `ambiguous` (T,) bool."""

    pool: FacePool
    index: np.ndarray
    odd: np.ndarray
    kind: np.ndarray
    ambiguous: np.ndarray
    true_odd: np.ndarray | None = None  # noiseless label when known (synthetic)

    def __len__(self) -> int:
        return len(self.index)


# ------------------------------------------------------------------------------------------
# image helpers


def to_tensor(images: np.ndarray):
    """uint8 (N, S, S, 3) -> float32 torch (N, 3, S, S) in [0, 1]: the encoder's input."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def crop_square(image: np.ndarray, box: tuple[float, float, float, float] | None, size: int) -> np.ndarray:
    """Crop a box (x0, y0, x1, y1 in pixels), squared around its centre, and resize.
    No box: centre square of the whole image."""
    from PIL import Image

    h, w = image.shape[:2]
    if box is None:
        side = min(h, w)
        x0, y0 = (w - side) / 2, (h - side) / 2
    else:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1])
        x0, y0 = cx - side / 2, cy - side / 2
    pil = Image.fromarray(image).crop((int(round(x0)), int(round(y0)), int(round(x0 + side)), int(round(y0 + side))))
    return np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_video_frames(path: Path, every: int = 5, limit: int | None = None) -> list[np.ndarray]:
    """Decode every `every`-th frame of a video with PyAV (neighbouring frames are near copies)."""
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
                if limit is not None and len(frames) >= limit:
                    break
    return frames


def load_folder_pool(root: Path, size: int, *, video_every: int = 5, limit: int | None = None) -> FacePool:
    """Every image and video under `root` (recursively) as face crops: the whole image is taken
    as the crop (centre square), so give it face crops, e.g. from the server's face detector."""
    crops: list[np.ndarray] = []
    for path in sorted(Path(root).rglob("*")):
        ext = path.suffix.lower()
        if ext in IMAGE_EXTS:
            crops.append(crop_square(read_image(path), None, size))
        elif ext in VIDEO_EXTS:
            crops += [crop_square(f, None, size) for f in read_video_frames(path, video_every)]
        if limit is not None and len(crops) >= limit:
            break
    if not crops:
        raise FileNotFoundError(f"no images or videos under {root}")
    return FacePool(images=np.stack(crops[:limit]), meta={"source": f"folder:{root}"})


# ------------------------------------------------------------------------------------------
# FEC CSV (Google Facial Expression Comparison layout, with local paths instead of URLs)
#
# Row: [path, x0, x1, y0, y1] x 3 (box as fractions of width/height: top-left column,
# bottom-right column, top-left row, bottom-right row), triplet type, then
# (annotator id, annotation) pairs where the annotation names the face MOST DIFFERENT (1..3).


def load_fec_csv(path: Path, size: int, *, image_root: Path | None = None) -> TripletSet:
    """An FEC-format CSV with local image paths -> TripletSet (majority vote of annotators;
    a triplet is ambiguous when annotators disagree)."""
    root = Path(image_root) if image_root else Path(path).parent
    cache: dict[tuple, int] = {}
    crops: list[np.ndarray] = []
    rows, odd, kinds, amb = [], [], [], []
    with open(path, newline="") as fh:
        for rec in csv.reader(fh):
            if not rec or rec[0].startswith("#"):
                continue
            idx = []
            for f in range(3):
                img_path, x0, x1, y0, y1 = rec[5 * f : 5 * f + 5]
                key = (img_path, x0, x1, y0, y1)
                if key not in cache:
                    p = Path(img_path)
                    image = read_image(p if p.is_absolute() else root / p)
                    h, w = image.shape[:2]
                    box = (float(x0) * w, float(y0) * h, float(x1) * w, float(y1) * h)
                    cache[key] = len(crops)
                    crops.append(crop_square(image, box, size))
                idx.append(cache[key])
            votes = [int(v) for v in rec[17::2] if v.strip()]
            counts = np.bincount(np.asarray(votes) - 1, minlength=3)
            rows.append(idx)
            odd.append(int(counts.argmax()))
            kinds.append(KIND_NAMES.get(rec[15].strip(), TWO_CLASS))
            amb.append(bool(counts.max() < len(votes)))
    pool = FacePool(images=np.stack(crops), meta={"source": f"fec:{path}"})
    return TripletSet(pool, np.asarray(rows, np.int64), np.asarray(odd, np.int64), np.asarray(kinds, np.int64), np.asarray(amb))


# ------------------------------------------------------------------------------------------
# synthetic world


def emotion_categories() -> list[str]:
    """Discrete categories for the classification baseline ONLY (derived from AUs)."""
    return ["neutral", "happy", "sad", "surprise", "fear", "anger", "disgust", "contempt", "other"]


_PROTO_TO_CATEGORY = {
    "smile": "happy", "laugh": "happy", "grin": "happy", "sad": "sad", "pout": "sad",
    "surprise": "surprise", "oh": "surprise", "fear": "fear", "anger": "anger", "rage": "anger",
    "disgust": "disgust", "contempt": "contempt", "smirk": "contempt",
}  # fmt: skip


def categorise(expressions: np.ndarray) -> np.ndarray:
    """(N, n_au) -> (N,) category index: nearest prototype by cosine (mirror-invariant),
    neutral when the face barely moves. For the classifier baseline and triplet kinds."""
    from freeavatar_server.synth import actors  # lazy: synth loads torch

    names = list(actors.PROTOTYPES)
    protos = np.stack([actors.prototype_vector(k) for k in names])
    protos = np.concatenate([protos, protos[:, actors.mirror_permutation()]])
    expr = np.asarray(expressions, np.float32)
    sims = (expr @ protos.T) / (np.linalg.norm(expr, axis=1, keepdims=True) + 1e-6) / np.linalg.norm(protos, axis=1)
    best = np.asarray(names + names)[sims.argmax(1)]
    cats = emotion_categories()
    out = np.array([cats.index(_PROTO_TO_CATEGORY.get(b, "other")) for b in best], np.int64)
    out[np.linalg.norm(expr, axis=1) < 0.35] = cats.index("neutral")
    return out


def expression_classes() -> list[str]:
    """The synthetic world's expression classes (neutral + its prototypes): what FEC-style
    one/two/three-class triplets are drawn from."""
    from freeavatar_server.synth.actors import PROTOTYPES  # lazy: synth loads torch

    return ["neutral", *PROTOTYPES]


def eval_triplets(n: int, *, seed: int, identity_offset: int, n_identities: int | None = None) -> list:
    """The `synth.triplets.Triplet`s of `synthetic_eval_triplets`, not yet rendered."""
    from freeavatar_server.synth import triplets as synth_triplets  # lazy: synth loads torch

    ids = identity_offset + np.arange(n_identities or max(n, 8), dtype=np.int64)
    return synth_triplets.make_triplets(n, seed=seed, identity_ids=ids)


def synthetic_eval_triplets(n: int, *, size: int, seed: int, identity_offset: int, n_identities: int | None = None) -> TripletSet:
    """Comparison triplets on identities from `identity_offset` up (never seen in training),
    built by the synthetic world's annotator simulation (FEC kinds, 20% ambiguous, 5% label
    noise on clear triplets, 35% on ambiguous ones)."""
    from freeavatar_server.synth import triplets as synth_triplets  # lazy: synth loads torch

    trips = eval_triplets(n, seed=seed, identity_offset=identity_offset, n_identities=n_identities)
    faces = synth_triplets.render_triplets(trips, size=size)  # (n, 3, S, S, 3)
    pool = FacePool(
        images=faces.reshape(-1, *faces.shape[2:]),
        expressions=np.concatenate([t.expressions for t in trips]).astype(np.float32),
        identity_ids=np.array([f.identity_id for t in trips for f in t.faces], np.int64),
        meta={"source": "synth.triplets.make_triplets", "seed": seed},
    )
    return TripletSet(
        pool,
        np.arange(3 * n, dtype=np.int64).reshape(n, 3),
        np.array([t.odd_one for t in trips], np.int64),
        np.array([KIND_NAMES[t.kind] for t in trips], np.int64),
        np.array([bool(t.ambiguous) for t in trips]),
        np.array([t.true_odd_one for t in trips], np.int64),
    )


# ------------------------------------------------------------------------------------------
# fresh synthetic batches, rendered ahead by a background process


@dataclass(frozen=True)
class StreamSpec:
    """What a `SyntheticStream` renders. Batch k is a pure function of (seed, rank, k), so
    resumed and distributed runs see the batches they would have seen (a trainer with
    `TrainConfig.reuse` trains on batch step // reuse at each step).

    Each batch holds `n_expressions` expressions, each on two identities, each identity with
    two expressions (face i and i + n share an expression; face i + n shares face i-1's
    identity): the pairs that teach "same expression, other person" and "same person, other
    expression" in every step. A share of faces is rendered without nuisance (frontal white
    light, grey background, no blur/noise/JPEG), falling from `clean_start` to `clean_end`
    over `steps` batches: expression is learnt first where it is easy to see, invariance after.
    """

    size: int
    n_expressions: int
    seed: int = 0
    rank: int = 0
    steps: int = 1
    clean_start: float = 0.5
    clean_end: float = 0.1
    identities: int = 500_000  # training identities 0..identities-1; validation starts at 500_000
    stylised: float = 0.0  # share of identities drawn as stylised characters (synth.actors)
    mascots: float = 0.0  # share drawn as mascots (synth.mascots)

    @property
    def batch(self) -> int:
        return 2 * self.n_expressions


def stream_expressions(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, N_AU) expressions and (n,) class index (-1: the free mix): half drawn from an
    expression class down to weak intensities (0.2), half from the world's free mixture."""
    from freeavatar_server.synth.actors import sample_expressions  # lazy: synth loads torch
    from freeavatar_server.synth.triplets import class_sample as synth_class_sample  # lazy: torch

    names = expression_classes()
    classes = np.where(rng.random(n) < 0.5, rng.integers(0, len(names), n), -1)
    expr = sample_expressions(n, rng)
    for i in np.flatnonzero(classes >= 0):
        expr[i] = synth_class_sample(names[classes[i]], rng, min_intensity=0.2)
    return expr, classes


def render_stream_batch(spec: StreamSpec, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (2n, S, S, 3) uint8, expressions (2n, N_AU), classes (2n,)) for one step."""
    # lazy: synth loads torch
    from freeavatar_server.synth.actors import MASCOT_OFFSET, STYLISED_OFFSET, render_faces

    rng = np.random.default_rng([spec.seed, spec.rank, step, 0x57EA])
    n = spec.n_expressions
    expr, classes = stream_expressions(n, rng)
    ids = rng.choice(spec.identities, size=n, replace=False)
    if spec.stylised > 0 or spec.mascots > 0:  # drawn only then: runs without them keep their batches
        kind = rng.random(n)
        ids = np.where(kind < spec.stylised, ids + STYLISED_OFFSET,
                       np.where(kind < spec.stylised + spec.mascots, ids + MASCOT_OFFSET, ids))
    expr, classes, ids = np.concatenate([expr, expr]), np.concatenate([classes, classes]), np.concatenate([ids, np.roll(ids, 1)])
    t = min(1.0, step / max(1, spec.steps - 1))
    clean = rng.random(2 * n) < spec.clean_start + (spec.clean_end - spec.clean_start) * t
    seeds = rng.integers(0, 2**62, 2 * n)
    images = np.empty((2 * n, spec.size, spec.size, 3), np.uint8)
    for part, nuisance in ((clean, False), (~clean, True)):
        if part.any():
            images[part] = render_faces(expr[part], ids[part], size=spec.size, sample_seeds=seeds[part], nuisance=nuisance).images
    return images, expr.astype(np.float32), classes


def _render_ahead(spec: StreamSpec, start: int, queue) -> None:  # runs in the child process
    import multiprocessing as mp

    import torch

    torch.set_num_threads(1)  # the painter is many small ops: threads only add overhead
    parent = mp.parent_process()
    step = start
    while True:
        batch = (step, render_stream_batch(spec, step))
        while True:
            try:
                queue.put(batch, timeout=1.0)
                break
            except queues.Full:
                # a trainer killed without clean-up never stops us: go when it is gone, without
                # waiting at exit to flush batches into a pipe that nobody will read again
                if parent is not None and not parent.is_alive():
                    queue.cancel_join_thread()
                    return
        step += 1


class SyntheticStream:
    """Batches start, start+1, ... rendered by one child process a few batches ahead, so
    rendering overlaps training. `get(k)` must be called in order (k is the batch's index: a
    trainer's step, or step // reuse); `close()` (or the context manager) stops the child."""

    def __init__(self, spec: StreamSpec, start: int = 0, ahead: int = 3) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
        self.spec, self._next = spec, start
        self._queue = ctx.Queue(maxsize=ahead)
        self._process = ctx.Process(target=_render_ahead, args=(spec, start, self._queue), daemon=True)
        self._process.start()

    def get(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if step != self._next:
            raise ValueError(f"stream is at step {self._next}, asked for step {step}")
        while True:
            try:
                _, batch = self._queue.get(timeout=5)
                break
            except queues.Empty as exc:  # slow, or dead? a dead renderer would hang us forever
                if not self._process.is_alive():
                    raise RuntimeError(f"the synthetic renderer exited with code {self._process.exitcode}") from exc
        self._next += 1
        return batch

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=5)
        self._queue.close()

    def __enter__(self) -> SyntheticStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
