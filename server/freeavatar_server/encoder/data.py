"""Data for the expression encoder. Every source ends up as the same two things:

- a `FacePool`: face crops (N, S, S, 3) uint8, with ground truth beside them when it exists
  (synthetic world) and without it otherwise (image folders, video files, FEC images);
- a `TripletSet`: rows of three pool indices and the label "which face is most different"
  (FEC layout), from an FEC CSV, from the synthetic world's annotator simulation, or labelled
  on the fly from ground-truth action units (`PoolTripletSampler`: an infinite, noiseless
  annotator; the AUs only label, they are never an input to the encoder).

MAE pretraining reads a pool; triplet tuning reads triplets. So real data (folder + FEC CSV)
and synthetic data go through one code path.
"""

from __future__ import annotations

import csv
import hashlib
import json
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
    classes: np.ndarray | None = None  # (N,) expression class index, -1 = free mix; synthetic only
    groups: np.ndarray | None = None  # (N,) scene group: same identity and nuisance within a group
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


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 with antialiased bilinear resampling."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(images), 256):
        x = torch.from_numpy(images[start : start + 256]).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


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
    from freeavatar_server.synth import actors

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


def triplet_kind(categories: np.ndarray) -> np.ndarray:
    """(T, 3) categories -> FEC kind: 1 (all same), 2 (two share), 3 (all differ)."""
    c = np.asarray(categories)
    n_unique = 1 + (c[:, 0] != c[:, 1]) + ((c[:, 2] != c[:, 0]) & (c[:, 2] != c[:, 1]))
    return n_unique.astype(np.int64)


def expression_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Ground-truth expression distance between AU vectors (the simulated annotator's view).
    Uses the synthetic world's own definition when it provides one."""
    # Euclidean in AU space, as synth.triplets.expression_distances labels its triplets.
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def expression_classes() -> list[str]:
    """The synthetic world's expression classes (neutral + its prototypes): what FEC-style
    one/two/three-class triplets are drawn from."""
    from freeavatar_server.synth.actors import PROTOTYPES

    return ["neutral", *PROTOTYPES]


def class_sample(name: str, rng: np.random.Generator) -> np.ndarray:
    """One expression of a class, as the synthetic world's triplets draw them, from a slightly
    lower intensity (0.3) so that weak expressions are in the pool too."""
    from freeavatar_server.synth.triplets import class_sample as synth_class_sample

    return synth_class_sample(name, rng, min_intensity=0.3)


def render_pool(
    n_identities: int,
    faces_per_identity: int,
    *,
    size: int,
    seed: int,
    identity_offset: int = 0,
    shared_share: float = 0.3,
    class_share: float = 0.7,
    render_size: int | None = None,
) -> FacePool:
    """Render a pool of synthetic faces. Each identity shows several expressions: `class_share`
    of them drawn from an expression class (prototype at some intensity, neutral included), the
    rest from the world's free mixture (blends, random AU combinations). A share of faces copy
    (with jitter) the expression of a face of ANOTHER identity, so the pool holds
    same-expression / different-identity pairs that teach identity invariance."""
    from freeavatar_server.synth.actors import render_faces, sample_expressions

    rng = np.random.default_rng(seed)
    n = n_identities * faces_per_identity
    ids = identity_offset + np.repeat(np.arange(n_identities, dtype=np.int64), faces_per_identity)
    expr = sample_expressions(n, rng)
    names = expression_classes()
    classes = np.where(rng.random(n) < class_share, rng.integers(0, len(names), n), -1)
    for i in np.flatnonzero(classes >= 0):
        expr[i] = class_sample(names[classes[i]], rng)
    copy = np.flatnonzero(rng.random(n) < shared_share)
    src = rng.integers(0, n, len(copy))
    jitter = rng.normal(0, 0.03, (len(copy), expr.shape[1])) * (expr[src] > 0)
    expr[copy] = np.clip(expr[src] + jitter, 0, 1).astype(np.float32)
    classes[copy] = classes[src]
    batch = render_faces(expr, ids, size=render_size or size, seed=seed)
    images = resize_uint8(batch.images, size)
    return FacePool(
        images=images, expressions=batch.expressions, identity_ids=ids, classes=classes,
        meta={"source": "synthetic", "seed": seed},
    )


POOL_VERSION = 2  # bump when render_pool changes what it draws: old caches are then ignored


def render_scene_groups(n_groups: int, group_size: int, *, size: int, seed: int, identity_offset: int = 0) -> FacePool:
    """Groups of faces that share identity, pose, lighting, background and camera (one scene,
    like frames of one actor's video) and differ only in expression. Triplets inside a group
    carry the expression signal without the nuisance, which is ~10x larger in pixel terms;
    the encoder learns what to look at from them, and invariance from the mixed pool."""
    from freeavatar_server.synth.actors import render_faces, sample_expressions, sample_seeds_for

    rng = np.random.default_rng(seed)
    n = n_groups * group_size
    group = np.repeat(np.arange(n_groups, dtype=np.int64), group_size)
    ids = identity_offset + rng.integers(0, 400_000, n_groups)[group]  # clear of validation ids
    expr = sample_expressions(n, rng)
    names = expression_classes()
    classes = np.where(rng.random(n) < 0.7, rng.integers(0, len(names), n), -1)
    for i in np.flatnonzero(classes >= 0):
        expr[i] = class_sample(names[classes[i]], rng)
    seeds = sample_seeds_for(seed, n_groups)[group]
    batch = render_faces(expr, ids, size=size, sample_seeds=seeds)
    return FacePool(
        images=batch.images, expressions=batch.expressions, identity_ids=ids, classes=classes,
        groups=group, meta={"source": "synthetic-scene-groups", "seed": seed},
    )


def pool_cache_path(cache_dir: Path, **params) -> Path:
    key = hashlib.sha1(json.dumps({**params, "version": POOL_VERSION}, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"pool_{key}.npz"


def save_pool(pool: FacePool, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    arrays = {"images": pool.images}
    if pool.expressions is not None:
        arrays["expressions"] = pool.expressions
    if pool.identity_ids is not None:
        arrays["identity_ids"] = pool.identity_ids
    if pool.classes is not None:
        arrays["classes"] = pool.classes
    if pool.groups is not None:
        arrays["groups"] = pool.groups
    np.savez(tmp, meta=json.dumps(pool.meta), **arrays)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file


def load_pool(path: Path) -> FacePool:
    with np.load(path) as z:
        return FacePool(
            images=z["images"],
            expressions=z["expressions"] if "expressions" in z else None,
            identity_ids=z["identity_ids"] if "identity_ids" in z else None,
            classes=z["classes"] if "classes" in z else None,
            groups=z["groups"] if "groups" in z else None,
            meta=json.loads(str(z["meta"])),
        )


def cached_pool(cache_dir: Path | None, *, scene_groups: bool = False, **params) -> FacePool:
    """render_pool(**params) (or render_scene_groups), cached on disk: rendering is the slow
    part on CPU."""
    render = render_scene_groups if scene_groups else render_pool
    if cache_dir is None:
        return render(**params)
    path = pool_cache_path(cache_dir, **({"scene_groups": True, **params} if scene_groups else params))
    if path.exists():
        return load_pool(path)
    pool = render(**params)
    save_pool(pool, path)
    return pool


def label_by_distance(expr: np.ndarray, index: np.ndarray, ambiguity: float = 0.08) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The noiseless annotator: the odd face is the one not in the closest pair. Returns
    (odd, ambiguous, relative margin); ambiguous when (second-closest - closest) / largest pair
    distance < `ambiguity` (the synthetic world's definition)."""
    a, b, c = expr[index[:, 0]], expr[index[:, 1]], expr[index[:, 2]]
    # pair distances: (b,c) closest -> odd 0, (a,c) -> odd 1, (a,b) -> odd 2
    d = np.stack([expression_distance(b, c), expression_distance(a, c), expression_distance(a, b)], axis=1)
    s = np.sort(d, axis=1)
    margin = (s[:, 1] - s[:, 0]) / (s[:, 2] + 1e-6)
    return d.argmin(1).astype(np.int64), margin < ambiguity, margin


class PoolTripletSampler:
    """Endless triplets over a synthetic pool, labelled from ground-truth AUs.

    `class_share` of each batch are FEC-style: three faces from one, two or three expression
    classes (kinds weighted 0.3/0.4/0.3 as in FEC). Of the rest, half are random triplets and
    half 'hard': a face, a near neighbour in AU space, and a third face often of the same
    identity as one of them (so identity is a distractor and only expression can decide)."""

    def __init__(self, pool: FacePool, *, neighbours: int = 24, class_share: float = 0.6, min_margin: float = 0.02) -> None:
        if pool.expressions is None or pool.identity_ids is None:
            raise ValueError("on-the-fly triplet labels need a synthetic pool with ground truth")
        self.pool = pool
        self.class_share = class_share
        self.min_margin = min_margin  # near-exact ties teach nothing but noise
        self.categories = categorise(pool.expressions)
        expr = pool.expressions
        # k nearest neighbours in AU space, computed once, in chunks to bound memory
        neighbours = min(neighbours, len(expr) - 1)
        sq = (expr**2).sum(1)
        self.knn = np.empty((len(expr), neighbours), np.int64)
        for s in range(0, len(expr), 2048):
            d = sq[s : s + 2048, None] + sq[None] - 2 * expr[s : s + 2048] @ expr.T
            d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf
            self.knn[s : s + 2048] = np.argpartition(d, neighbours - 1, axis=1)[:, :neighbours]
        self._by_id = _group(pool.identity_ids)
        self._by_class = _group(pool.classes) if pool.classes is not None else {}
        self._by_class.pop(-1, None)

    def _class_triplets(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        keys = np.array(sorted(self._by_class))
        kinds = rng.choice(3, size=n, p=[0.3, 0.4, 0.3]) + 1
        idx = np.empty((n, 3), np.int64)
        for t in range(n):
            c = keys[rng.choice(len(keys), 3, replace=False)]
            names = {1: (c[0], c[0], c[0]), 2: (c[0], c[0], c[1]), 3: (c[0], c[1], c[2])}[int(kinds[t])]
            for k, cls in enumerate(names):
                members = self._by_class[int(cls)]
                idx[t, k] = members[rng.integers(len(members))]
        return idx, kinds

    def _mixed_triplets(self, n: int, rng: np.random.Generator) -> np.ndarray:
        idx = rng.integers(0, len(self.pool), (n, 3))
        n_hard = n // 2
        anchors = idx[:n_hard, 0]
        idx[:n_hard, 1] = self.knn[anchors, rng.integers(0, self.knn.shape[1], n_hard)]
        ids = self.pool.identity_ids
        for t in range(n_hard):
            if rng.random() < 0.6:  # same identity as one of the pair
                same = self._by_id[int(ids[idx[t, rng.integers(0, 2)]])]
                idx[t, 2] = same[rng.integers(len(same))]
        return idx

    def sample(self, n: int, rng: np.random.Generator) -> TripletSet:
        parts, kinds = [], []
        got = 0
        while got < n:
            want = n - got + 8
            n_cls = int(round(want * self.class_share)) if self._by_class else 0
            ci, ck = self._class_triplets(n_cls, rng) if n_cls else (np.zeros((0, 3), np.int64), np.zeros(0, np.int64))
            mi = self._mixed_triplets(want - n_cls, rng)
            idx = np.concatenate([ci, mi])
            kind = np.concatenate([ck, triplet_kind(self.categories[mi])])
            _, _, margin = label_by_distance(self.pool.expressions, idx)
            keep = margin >= self.min_margin
            parts.append(idx[keep])
            kinds.append(kind[keep])
            got += int(keep.sum())
        idx, kind = np.concatenate(parts)[:n], np.concatenate(kinds)[:n]
        perm = np.argsort(rng.random((n, 3)), axis=1)  # shuffle positions within each triplet
        idx = np.take_along_axis(idx, perm, axis=1)
        odd, amb, _ = label_by_distance(self.pool.expressions, idx)
        return TripletSet(self.pool, idx, odd, kind, amb, true_odd=odd)


    def in_batch(self, faces: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to n more triplets among the faces already in a batch (`faces`: pool indices),
        labelled the same way: extra supervision for no extra forward pass.
        Returns (local (k, 3) rows into `faces`, odd (k,), kind (k,))."""
        loc = rng.integers(0, len(faces), (2 * n, 3))
        loc = loc[(loc[:, 0] != loc[:, 1]) & (loc[:, 0] != loc[:, 2]) & (loc[:, 1] != loc[:, 2])]
        odd, _, margin = label_by_distance(self.pool.expressions, faces[loc])
        keep = np.flatnonzero(margin >= self.min_margin)[:n]
        return loc[keep], odd[keep], triplet_kind(self.categories[faces[loc[keep]]])


class GroupTripletSampler:
    """Triplets inside scene groups (see render_scene_groups), labelled from ground truth."""

    def __init__(self, pool: FacePool, min_margin: float = 0.02) -> None:
        if pool.groups is None or pool.expressions is None:
            raise ValueError("needs a scene-group pool")
        self.pool = pool
        self.min_margin = min_margin
        self.members = _group(pool.groups)
        self.keys = np.array(sorted(self.members))
        self.categories = categorise(pool.expressions)

    def sample(self, n_groups: int, n_triplets: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(faces (F,) pool indices, local (T, 3) rows into faces, odd (T,), kind (T,));
        every triplet's three faces come from one group."""
        picked = self.keys[rng.choice(len(self.keys), n_groups, replace=False)]
        faces = np.concatenate([self.members[int(g)] for g in picked])
        size = len(self.members[int(picked[0])])
        g = rng.integers(0, n_groups, 2 * n_triplets)
        k = np.argsort(rng.random((2 * n_triplets, size)), axis=1)[:, :3]  # 3 distinct members
        loc = g[:, None] * size + k
        odd, _, margin = label_by_distance(self.pool.expressions, faces[loc])
        keep = np.flatnonzero(margin >= self.min_margin)[:n_triplets]
        return faces, loc[keep], odd[keep], triplet_kind(self.categories[faces[loc[keep]]])


def _group(keys: np.ndarray) -> dict[int, np.ndarray]:
    """key -> indices with that key."""
    order = np.argsort(keys, kind="stable")
    uniq, start, count = np.unique(keys[order], return_index=True, return_counts=True)
    return {int(u): order[s : s + c] for u, s, c in zip(uniq, start, count, strict=True)}


def synthetic_eval_triplets(n: int, *, size: int, seed: int, identity_offset: int, n_identities: int | None = None) -> TripletSet:
    """Comparison triplets on identities from `identity_offset` up (never seen in training),
    built by the synthetic world's annotator simulation (FEC kinds, 20% ambiguous, 5% label
    noise on clear triplets, 35% on ambiguous ones)."""
    from freeavatar_server.synth import triplets as synth_triplets

    ids = identity_offset + np.arange(n_identities or max(n, 8), dtype=np.int64)
    trips = synth_triplets.make_triplets(n, seed=seed, identity_ids=ids)
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
