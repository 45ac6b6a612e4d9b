"""Synthetic actors: identity, expression (FACS-like action units), head pose, lighting and
nuisance, rendered to face crops or full camera frames with the ground truth beside each image.

Left/right: `_L` means the ACTOR's left, which is the image's right (cameras here are not
mirrored). Identity `i` is a pure function of `i` (any int64), nuisance a pure function of
(seed, position in batch) unless per-sample seeds are given, so the same inputs always give the
same pixels and a batch can be rendered in chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from freeavatar_server.synth.face import MUSCLES, Identity, Scene, face_box, paint
from freeavatar_server.synth.mascots import paint_mascots
from freeavatar_server.synth.raster import (
    cov,
    gaussian_blur,
    hash_uniform,
    hsv,
    jpeg_roundtrip,
    to_uint8,
)

ACTION_UNITS: tuple[str, ...] = (
    "brow_inner_raise",      # AU1
    "brow_outer_raise_L",    # AU2 (actor's left)
    "brow_outer_raise_R",    # AU2 (actor's right)
    "brow_lower",            # AU4
    "upper_lid_raise",       # AU5
    "cheek_raise",           # AU6
    "lid_tighten",           # AU7
    "blink_L",               # AU45 left
    "blink_R",               # AU45 right
    "nose_wrinkle",          # AU9
    "upper_lip_raise",       # AU10
    "lip_corner_pull_L",     # AU12 left
    "lip_corner_pull_R",     # AU12 right
    "dimple",                # AU14
    "lip_corner_depress_L",  # AU15 left
    "lip_corner_depress_R",  # AU15 right
    "chin_raise",            # AU17
    "lip_pucker",            # AU18
    "lip_stretch",           # AU20
    "lip_press",             # AU24
    "lips_part",             # AU25
    "jaw_drop",              # AU26
    "jaw_sideways_L",        # AU30 towards the actor's left
    "jaw_sideways_R",        # AU30 towards the actor's right
    "cheek_puff",            # AU34
)  # fmt: skip
AU_INDEX: dict[str, int] = {name: i for i, name in enumerate(ACTION_UNITS)}
FACS_CODES: dict[str, str] = {
    "brow_inner_raise": "AU1", "brow_outer_raise_L": "AU2L", "brow_outer_raise_R": "AU2R",
    "brow_lower": "AU4", "upper_lid_raise": "AU5", "cheek_raise": "AU6", "lid_tighten": "AU7",
    "blink_L": "AU45L", "blink_R": "AU45R", "nose_wrinkle": "AU9", "upper_lip_raise": "AU10",
    "lip_corner_pull_L": "AU12L", "lip_corner_pull_R": "AU12R", "dimple": "AU14",
    "lip_corner_depress_L": "AU15L", "lip_corner_depress_R": "AU15R", "chin_raise": "AU17",
    "lip_pucker": "AU18", "lip_stretch": "AU20", "lip_press": "AU24", "lips_part": "AU25",
    "jaw_drop": "AU26", "jaw_sideways_L": "AU30L", "jaw_sideways_R": "AU30R",
    "cheek_puff": "AU34",
}  # fmt: skip
N_AU = len(ACTION_UNITS)


def mirror_permutation() -> np.ndarray:
    """Index array that swaps every _L action unit with its _R partner."""
    perm = np.arange(N_AU)
    for name, i in AU_INDEX.items():
        if name.endswith("_L"):
            perm[i], perm[AU_INDEX[name[:-2] + "_R"]] = AU_INDEX[name[:-2] + "_R"], i
    return perm


# Prototypical expressions (EMFACS-style AU combinations), intensities at full strength.
PROTOTYPES: dict[str, dict[str, float]] = {
    "smile": {"cheek_raise": 0.7, "lip_corner_pull_L": 0.9, "lip_corner_pull_R": 0.9},
    "laugh": {"cheek_raise": 0.9, "lip_corner_pull_L": 1.0, "lip_corner_pull_R": 1.0,
              "lips_part": 1.0, "jaw_drop": 0.55, "lid_tighten": 0.3},
    "grin": {"cheek_raise": 0.6, "lip_corner_pull_L": 0.8, "lip_corner_pull_R": 0.8,
             "lips_part": 0.7, "upper_lip_raise": 0.4, "lip_stretch": 0.3},
    "sad": {"brow_inner_raise": 0.9, "brow_lower": 0.35, "lip_corner_depress_L": 0.85,
            "lip_corner_depress_R": 0.85, "chin_raise": 0.5},
    "surprise": {"brow_inner_raise": 0.9, "brow_outer_raise_L": 0.9, "brow_outer_raise_R": 0.9,
                 "upper_lid_raise": 0.85, "jaw_drop": 0.7, "lips_part": 0.9},
    "fear": {"brow_inner_raise": 0.9, "brow_outer_raise_L": 0.5, "brow_outer_raise_R": 0.5,
             "brow_lower": 0.5, "upper_lid_raise": 0.9, "lip_stretch": 0.9, "lips_part": 0.6,
             "jaw_drop": 0.25},
    "anger": {"brow_lower": 1.0, "upper_lid_raise": 0.4, "lid_tighten": 0.8, "lip_press": 0.8,
              "chin_raise": 0.4},
    "rage": {"brow_lower": 1.0, "lid_tighten": 0.7, "upper_lip_raise": 0.6, "jaw_drop": 0.6,
             "lips_part": 1.0, "nose_wrinkle": 0.3},
    "disgust": {"nose_wrinkle": 1.0, "upper_lip_raise": 0.8, "brow_lower": 0.5,
                "lid_tighten": 0.4, "cheek_raise": 0.3, "chin_raise": 0.3},
    "contempt": {"lip_corner_pull_L": 0.7, "dimple": 0.6},
    "smirk": {"lip_corner_pull_L": 0.8, "cheek_raise": 0.3},
    "wink": {"blink_L": 1.0, "cheek_raise": 0.4, "lip_corner_pull_L": 0.5},
    "kiss": {"lip_pucker": 1.0, "lip_press": 0.2},
    "oh": {"lip_pucker": 0.6, "lips_part": 0.8, "jaw_drop": 0.45, "brow_inner_raise": 0.3},
    "puff": {"cheek_puff": 1.0, "lip_press": 0.6},
    "grimace": {"lip_stretch": 1.0, "lips_part": 0.5, "lid_tighten": 0.6, "brow_lower": 0.5,
                "upper_lip_raise": 0.3},
    "sleepy": {"blink_L": 0.6, "blink_R": 0.6, "brow_inner_raise": 0.2},
    "doubt": {"brow_outer_raise_L": 0.8, "brow_lower": 0.3, "lip_press": 0.5, "chin_raise": 0.4},
    "pout": {"chin_raise": 0.8, "lip_corner_depress_L": 0.4, "lip_corner_depress_R": 0.4,
             "lip_pucker": 0.3},
    "jaw_shift": {"jaw_sideways_L": 0.8, "lips_part": 0.3},
}  # fmt: skip


def prototype_vector(name: str, intensity: float = 1.0) -> np.ndarray:
    """The (N_AU,) action-unit vector of a named prototype expression at an intensity."""
    vec = np.zeros(N_AU, dtype=np.float32)
    for au, value in PROTOTYPES[name].items():
        vec[AU_INDEX[au]] = value * intensity
    return vec


def sample_expressions(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, N_AU) float32 plausible expressions in [0, 1], mostly sparse.

    Mixture: 12% neutral (with faint tone), 45% one prototype at a random intensity with
    per-AU jitter and left/right imbalance (half of the one-sided ones mirrored), 18% a blend of
    two prototypes, 25% a random sparse combination of 1-4 AUs. Independent blinks on top.
    """
    names = list(PROTOTYPES)
    protos = np.stack([prototype_vector(k) for k in names])
    perm = mirror_permutation()
    out = np.zeros((n, N_AU), dtype=np.float32)
    kind = rng.choice(4, size=n, p=[0.12, 0.45, 0.18, 0.25])
    for i in range(n):
        if kind[i] == 0:
            vec = rng.uniform(0, 0.08, N_AU) * (rng.random(N_AU) < 0.15)
        elif kind[i] in (1, 2):
            vec = protos[rng.integers(len(names))] * rng.uniform(0.3, 1.0)
            if kind[i] == 2:
                w = rng.uniform(0.3, 0.7)
                vec = (1 - w) * vec + w * protos[rng.integers(len(names))] * rng.uniform(
                    0.4, 1.0
                ) * 1.3
            vec = vec * rng.uniform(0.75, 1.25, N_AU)
        else:
            vec = np.zeros(N_AU)
            k = rng.integers(1, 5)
            vec[rng.choice(N_AU, size=k, replace=False)] = rng.uniform(0.2, 1.0, k)
        if rng.random() < 0.5:
            vec = vec[perm]
        if rng.random() < 0.4:  # people are rarely symmetric
            vec = vec * _side_gains(rng)
        if rng.random() < 0.08:
            both = rng.uniform(0.6, 1.0)
            vec[AU_INDEX["blink_L"]] = max(vec[AU_INDEX["blink_L"]], both)
            vec[AU_INDEX["blink_R"]] = max(vec[AU_INDEX["blink_R"]], both)
        out[i] = np.clip(vec, 0.0, 1.0)
    return out


def _side_gains(rng: np.random.Generator) -> np.ndarray:
    gains = np.ones(N_AU)
    weak = "_L" if rng.random() < 0.5 else "_R"
    scale = rng.uniform(0.4, 0.9)
    for name, i in AU_INDEX.items():
        if name.endswith(weak):
            gains[i] = scale
    return gains


def au_to_muscles(aus: np.ndarray) -> dict[str, np.ndarray]:
    """Action units (B, N_AU) -> the painter's muscle parameters (each (B,))."""
    aus = np.asarray(aus, dtype=np.float32)
    a = {name: aus[:, i] for i, name in enumerate(ACTION_UNITS)}
    zero = np.zeros(len(aus), dtype=np.float32)
    m: dict[str, np.ndarray] = {k: zero for k in MUSCLES}
    for s in "LR":
        m[f"brow_inner_up_{s}"] = a["brow_inner_raise"]
        m[f"brow_outer_up_{s}"] = a[f"brow_outer_raise_{s}"]
        m[f"brow_down_{s}"] = a["brow_lower"]
        m[f"lid_raise_{s}"] = a["upper_lid_raise"]
        m[f"lid_tight_{s}"] = a["lid_tighten"]
        m[f"blink_{s}"] = a[f"blink_{s}"]
        m[f"cheek_{s}"] = a["cheek_raise"]
        m[f"sneer_{s}"] = a["nose_wrinkle"]
        m[f"upper_lip_up_{s}"] = a["upper_lip_raise"]
        m[f"corner_pull_{s}"] = a[f"lip_corner_pull_{s}"]
        m[f"corner_depress_{s}"] = a[f"lip_corner_depress_{s}"]
        m[f"dimple_{s}"] = a["dimple"]
        m[f"stretch_{s}"] = a["lip_stretch"]
        m[f"press_{s}"] = a["lip_press"]
    m["chin_raise"] = a["chin_raise"]
    m["pucker"] = a["lip_pucker"]
    m["lips_part"] = np.maximum(a["lips_part"], 0.5 * a["jaw_drop"])  # a dropped jaw parts lips
    m["jaw_open"] = a["jaw_drop"]
    m["jaw_side"] = a["jaw_sideways_L"] - a["jaw_sideways_R"]  # +u is the actor's left
    m["cheek_puff"] = a["cheek_puff"]
    return m


# ---------------------------------------------------------------------------------------------
# identity


_SKIN_LIGHT = np.array([0.98, 0.86, 0.76])
_SKIN_DARK = np.array([0.33, 0.21, 0.14])
# Repeated rows weight the draw: mostly black and brown, some blond/red/grey, rare dyed.
_HAIR = np.array([
    [0.08, 0.06, 0.05], [0.08, 0.06, 0.05], [0.08, 0.06, 0.05], [0.14, 0.1, 0.07],
    [0.22, 0.14, 0.08], [0.22, 0.14, 0.08], [0.42, 0.27, 0.14], [0.42, 0.27, 0.14],
    [0.78, 0.62, 0.36], [0.62, 0.26, 0.1], [0.6, 0.6, 0.6], [0.88, 0.88, 0.86],
    [0.25, 0.3, 0.7], [0.75, 0.3, 0.55],
])  # fmt: skip
_IRIS = np.array([[0.3, 0.18, 0.08], [0.15, 0.1, 0.06], [0.25, 0.45, 0.7], [0.3, 0.5, 0.3],
                  [0.45, 0.45, 0.5]])  # fmt: skip


STYLISED_OFFSET = 1 << 62  # ids from here up are stylised characters (see `_stylise`); people are
# drawn below it (random ids come from [0, 2**62))
MASCOT_OFFSET = 3 << 61  # ids from here up are mascots (synth.mascots): critters, robots, blobs.
# Crops only (render_faces); their boxes are those of the character drawn under the same id.


def make_identities(identity_ids: np.ndarray) -> Identity:
    """Deterministic identity parameters for each id (a pure function of the id); ids from
    STYLISED_OFFSET up are stylised characters rather than people."""
    ids = np.asarray(identity_ids, dtype=np.int64).reshape(-1)
    ident = _human_identities(ids)
    stylised = _is_character(ids)
    return _stylise(ident, ids, stylised) if stylised.any() else ident


def _is_character(ids: np.ndarray) -> np.ndarray:
    """Drawn as a cartoon: stylised people and mascots."""
    return ids >= STYLISED_OFFSET


def _is_mascot(ids: np.ndarray) -> np.ndarray:
    return ids >= MASCOT_OFFSET


def _human_identities(ids: np.ndarray) -> Identity:
    h = hash_uniform(ids, salt=0x1D, n=48)
    c = iter(range(48))

    def U(lo: float, hi: float) -> np.ndarray:  # next hashed column, scaled to [lo, hi)
        return lo + (hi - lo) * h[:, next(c)]

    def pick(table: np.ndarray) -> np.ndarray:  # next hashed column picks a table row
        return table[(h[:, next(c)] * len(table)).astype(int)]

    tone = U(0.0, 1.0)
    skin = _SKIN_LIGHT[None] * (1 - tone[:, None]) + _SKIN_DARK[None] * tone[:, None]
    skin = skin * (1 + (U(-0.06, 0.06)[:, None] * np.array([1.0, 0.0, -1.0])))
    hair_rgb = pick(_HAIR)
    hair_rgb = np.clip(hair_rgb * U(0.8, 1.2)[:, None], 0, 1)
    style = U(0, 1)
    bald = style < 0.1
    long_hair = (style > 0.6).astype(np.float64)
    hairline = np.where(bald, -2.0, U(-0.72, -0.42))
    volume = np.where(bald, 0.0, U(0.6, 1.0))
    beard_draw, mustache_draw, glasses_draw = U(0, 1), U(0, 1), U(0, 1)
    beard = np.where(beard_draw < 0.12, 0.95, np.where(beard_draw < 0.22, 0.45, 0.0))
    return Identity(
        head_w=U(0.56, 0.66),
        head_h=U(0.7, 0.8),
        shape_p=U(1.9, 2.8),
        jaw_w=U(0.68, 0.95),
        eye_dx=U(0.3, 0.38),
        eye_y=U(-0.06, 0.04),
        eye_w=U(0.12, 0.16),
        eye_h=U(0.05, 0.08),
        eye_tilt=U(-0.015, 0.03),
        iris_r=U(0.04, 0.052),
        brow_y=U(-0.3, -0.22),
        brow_in=U(0.07, 0.13),
        brow_out=U(0.48, 0.58),
        brow_th=U(0.018, 0.04),
        brow_arch=U(0.0, 0.05),
        nose_y=U(0.25, 0.34),
        nose_w=U(0.11, 0.17),
        mouth_y=U(0.53, 0.6),
        mouth_w=U(0.25, 0.33),
        lip_up=U(0.03, 0.05),
        lip_lo=U(0.04, 0.07),
        ear_size=U(0.85, 1.15),
        hairline=hairline,
        hair_part=U(-0.15, 0.15),
        hair_volume=volume,
        hair_long=long_hair,
        beard=beard,
        mustache=(mustache_draw < 0.12).astype(np.float64) * (beard > 0),
        glasses=(glasses_draw < 0.2).astype(np.float64),
        wrinkles=U(0.0, 1.0),
        skin=np.clip(skin, 0, 1),
        lip_rgb=np.clip(
            skin * np.array([0.72, 0.4, 0.42]) * U(0.8, 1.0)[:, None]
            + np.array([0.12, 0.01, 0.03]),
            0,
            1,
        ),
        iris_rgb=pick(_IRIS),
        hair_rgb=hair_rgb,
        brow_rgb=hair_rgb * 0.7 + 0.02,
        shirt_rgb=np.stack([U(0.1, 0.9), U(0.1, 0.9), U(0.1, 0.9)], axis=1),
        frame_rgb=pick(
            np.array([[0.05, 0.05, 0.05], [0.4, 0.25, 0.1], [0.7, 0.7, 0.72], [0.6, 0.1, 0.1]])
        ),
    )


def _stylise(ident: Identity, ids: np.ndarray, rows: np.ndarray) -> Identity:
    """Cartoon-like characters for the encoder to learn expression beyond human looks: skin of
    any hue, big eyes and irises, bold brows, small noses, wide mouths, rounder or squarer
    heads, no beards, glasses or wrinkles. The action units still move the same features, so
    the world's triplet labels hold for them. The built-in avatars are NOT drawn this way:
    their look and rig mapping stay unseen by the encoder, as a studio's avatars would be."""
    h = hash_uniform(ids[rows], salt=0x5E, n=40)
    c = iter(range(40))

    def U(lo: float, hi: float) -> np.ndarray:
        return lo + (hi - lo) * h[:, next(c)]

    def hue(sat_lo: float, val_lo: float) -> np.ndarray:  # (n, 3) a colour of any hue
        tint, val = U(0, 1), U(val_lo, 1.0)  # draw order: hue, value, saturation
        return hsv(tint, U(sat_lo, 0.9), val)

    skin = hue(0.2, 0.45)
    bald = U(0, 1) < 0.5
    hair = hue(0.3, 0.1)
    style = {
        "head_w": U(0.6, 0.74), "head_h": U(0.62, 0.8), "shape_p": U(1.9, 4.0),
        "jaw_w": U(0.75, 1.0), "eye_dx": U(0.28, 0.4), "eye_w": U(0.15, 0.24),
        "eye_h": U(0.08, 0.15), "iris_r": U(0.05, 0.09), "brow_th": U(0.03, 0.07),
        "nose_w": U(0.05, 0.11), "mouth_w": U(0.28, 0.44), "lip_up": U(0.02, 0.06),
        "lip_lo": U(0.03, 0.08), "ear_size": U(0.6, 1.4),
        "hairline": np.where(bald, -2.0, U(-0.75, -0.5)), "hair_volume": np.where(bald, 0.0, U(0.6, 1.0)),
        "hair_long": np.zeros(len(skin)), "beard": np.zeros(len(skin)), "mustache": np.zeros(len(skin)),
        "glasses": np.zeros(len(skin)), "wrinkles": np.zeros(len(skin)), "skin": skin,
        "lip_rgb": np.clip(np.where(U(0, 1)[:, None] < 0.5, hue(0.5, 0.3), skin * 0.45), 0, 1),
        "iris_rgb": hue(0.3, 0.1), "hair_rgb": hair,
        "brow_rgb": np.where(U(0, 1)[:, None] < 0.5, hair * 0.7, np.full_like(skin, 0.08)),
    }  # fmt: skip
    out = {}
    for name in Identity.__dataclass_fields__:
        value = getattr(ident, name).copy()
        if name in style:
            value[rows] = style[name]
        out[name] = value
    return Identity(**out)


# ---------------------------------------------------------------------------------------------
# pose, light, nuisance


MAX_BLUR = 1.4  # largest defocus sigma, in pixels of a 128 px crop


@dataclass(frozen=True)
class Nuisance:
    """Per-sample nuisance draws (all (B,) or (B, k) numpy arrays)."""

    light_dir: np.ndarray
    light_rgb: np.ndarray
    ambient: np.ndarray
    diffuse: np.ndarray
    shift: np.ndarray  # (B, 2) head offset in crop units
    scale: np.ndarray
    gaze: np.ndarray  # (B, 2) where the eyes look, painter units
    blur: np.ndarray  # sigma in pixels at 128 px
    noise: np.ndarray  # std in [0,1] units
    jpeg: np.ndarray  # quality, 0 = no JPEG
    bg: np.ndarray  # (B, _BG_DRAWS) uniforms for the background clutter


def sample_seeds_for(seed: int, n: int) -> np.ndarray:
    """Per-sample seeds of a batch rendered with one `seed`: a hash of (seed, index)."""
    return (hash_uniform(np.arange(n), salt=seed, n=1)[:, 0] * 2**62).astype(np.int64)


def sample_poses(seeds: np.ndarray) -> np.ndarray:
    """(B, 3) yaw, pitch, roll in degrees; yaw up to 30, pitch up to 20, roll up to 20."""
    h = hash_uniform(seeds, salt=0x905E, n=3)
    return (np.array([30.0, 20.0, 20.0]) * (2 * h - 1)).astype(np.float32)


def sample_nuisance(seeds: np.ndarray, enabled: bool) -> Nuisance:
    """Lighting, framing jitter, gaze, background and camera degradations for each seed."""
    b = len(seeds)
    h = hash_uniform(seeds, salt=0x7A11, n=24)
    bg = hash_uniform(seeds, salt=0xB6, n=_BG_DRAWS)
    if not enabled:
        d = np.array([0.0, -0.35, 1.0]) / np.linalg.norm([0.0, -0.35, 1.0])
        return Nuisance(
            light_dir=np.tile(d, (b, 1)),
            light_rgb=np.ones((b, 3)),
            ambient=np.full(b, 0.55),
            diffuse=np.full(b, 0.55),
            shift=np.zeros((b, 2)),
            scale=np.ones(b),
            gaze=np.zeros((b, 2)),
            blur=np.zeros(b),
            noise=np.zeros(b),
            jpeg=np.zeros(b),
            bg=bg,
        )
    lx, ly = 1.6 * h[:, 0] - 0.8, 1.4 * h[:, 1] - 0.9
    d = np.stack([lx, ly, 0.5 + 0.6 * h[:, 2]], axis=1)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    warm = 2 * h[:, 3] - 1  # warm tungsten .. cool daylight
    light_rgb = np.stack([1 + 0.12 * warm, np.ones(b), 1 - 0.15 * warm], axis=1) * (
        0.8 + 0.4 * h[:, [4]]
    )
    return Nuisance(
        light_dir=d,
        light_rgb=light_rgb,
        ambient=0.3 + 0.3 * h[:, 5],
        diffuse=0.45 + 0.45 * h[:, 6],
        shift=(h[:, 7:9] - 0.5) * 0.14,
        scale=0.9 + 0.2 * h[:, 9],
        gaze=(h[:, 10:12] - 0.5) * np.array([1.2, 0.8]),
        blur=np.where(h[:, 12] < 0.5, 0.0, MAX_BLUR * h[:, 13]),
        noise=np.where(h[:, 14] < 0.3, 0.0, 0.045 * h[:, 15]),
        jpeg=np.where(h[:, 16] < 0.5, 0, 20 + 75 * h[:, 17]).astype(int),
        bg=bg,
    )


# ---------------------------------------------------------------------------------------------
# backgrounds

_N_SHAPES = 5
_BG_DRAWS = 7 + 9 * _N_SHAPES


def _muted(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3) uniforms -> (B,3,1,1) room-like colours: pulled towards a random grey level."""
    grey = rgb.mean(dim=1, keepdim=True)
    return (0.1 + 0.8 * (grey + 0.55 * (rgb - grey))).reshape(-1, 3, 1, 1)


def paint_background(
    gx: torch.Tensor, gy: torch.Tensor, draws: np.ndarray, cluttered: bool, pixel: float
) -> torch.Tensor:
    """(B,3,H,W) cluttered background: a colour gradient plus rectangles/blobs, some striped
    (shelves, blinds, posters). gx (1,1,W) and gy (1,H,1) span roughly [-1, 1].

    Drawn at whatever grid it is given; callers pass a half-resolution grid and upsample, which
    also gives the out-of-focus look of a real background.
    """
    b = len(draws)
    if not cluttered:
        return torch.full((b, 3, gy.shape[1], gx.shape[2]), 0.55)
    h = torch.as_tensor(draws, dtype=torch.float32)

    def P(i: int) -> torch.Tensor:
        return h[:, i].reshape(b, 1, 1)

    c0 = _muted(h[:, 0:3])
    c1 = _muted(h[:, 3:6])
    ang = P(6) * 2 * math.pi
    t = ((gx * torch.cos(ang) + gy * torch.sin(ang)) * 0.5 + 0.5).clamp(0, 1).unsqueeze(1)
    img = c0 + (c1 - c0) * t
    for k in range(_N_SHAPES):
        o = 7 + 9 * k
        cx, cy = P(o) * 2.4 - 1.2, P(o + 1) * 2.4 - 1.2
        w, hh = P(o + 2) * 0.7 + 0.08, P(o + 3) * 0.7 + 0.08
        p = torch.where(P(o + 4) < 0.5, 2.0, 8.0)  # blob or box
        d = 1.0 - ((gx - cx).abs() / w) ** p - ((gy - cy).abs() / hh) ** p
        a = cov(d * 0.3, pixel)
        stripes = torch.where(
            P(o + 8) < 0.3, 0.75 + 0.25 * torch.sign(torch.sin(gy * (20 + 40 * P(o + 8)))), 1.0
        )
        color = _muted(h[:, o + 5 : o + 8]) * stripes.unsqueeze(1)
        img = img + (color - img) * a.unsqueeze(1)
    return img


# ---------------------------------------------------------------------------------------------
# rendering


@dataclass
class FaceBatch:
    """Rendered faces and the ground truth beside each image."""

    images: np.ndarray  # (B, H, W, 3) uint8
    expressions: np.ndarray  # (B, N_AU) float32 action units in [0, 1]
    identity_ids: np.ndarray  # (B,) int64
    poses: np.ndarray  # (B, 3) float32 yaw, pitch, roll in degrees
    boxes: (
        np.ndarray
    )  # (B, 4) float32 x0, y0, x1, y1 of the face (brow-to-chin, ear-to-ear) in pixels

    def __len__(self) -> int:
        return len(self.images)


# Samples per painter call, and pixels per frame tile. The painter streams ~100 full-size
# temporaries; keeping them cache-sized matters more than batching. Never changes pixels.
_CHUNK_PIXELS = 1 << 18  # 16 crops of 128 x 128 per painter call
_TILE_PIXELS = 1 << 17


def _check_inputs(
    expressions: np.ndarray, identity_ids: np.ndarray, poses: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    expr = np.asarray(expressions, dtype=np.float32)
    if expr.ndim != 2 or expr.shape[1] != N_AU:
        raise ValueError(f"expressions must be (B, {N_AU}), got {expr.shape}")
    ids = np.asarray(identity_ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(expr):
        raise ValueError(f"{len(ids)} identity ids for {len(expr)} expressions")
    if poses is not None and np.asarray(poses).shape != (len(expr), 3):
        raise ValueError(f"poses must be (B, 3), got {np.asarray(poses).shape}")
    return np.clip(expr, 0.0, 1.0), ids


def _muscles(expr: np.ndarray, nui: Nuisance) -> dict[str, np.ndarray]:
    m = au_to_muscles(expr)
    for s in "LR":
        m[f"gaze_x_{s}"] = nui.gaze[:, 0].astype(np.float32)
        m[f"gaze_y_{s}"] = nui.gaze[:, 1].astype(np.float32)
    return m


def _scene(
    nui: Nuisance,
    poses: np.ndarray,
    hx: np.ndarray,
    hy: np.ndarray,
    scale: np.ndarray,
    pixel: float,
) -> Scene:
    return Scene(
        hx=hx, hy=hy, scale=scale, yaw=poses[:, 0], pitch=poses[:, 1], roll=poses[:, 2],
        pixel=np.full(len(hx), pixel), light_dir=nui.light_dir, light_rgb=nui.light_rgb,
        ambient=nui.ambient, diffuse=nui.diffuse,
    )  # fmt: skip


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
_GRADIENT_KERNELS = torch.stack([_SOBEL, _SOBEL.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
_LUMA = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)


def _cel_shade(img: torch.Tensor, levels: int = 4, edge: float = 0.06) -> torch.Tensor:
    """Draw characters as cartoons are drawn: shading flattened into a few colour bands, and ink
    outlines where the (lightly smoothed) luminance changes sharply. Avatars are flat-shaded and
    outlined; an encoder that has only seen soft shaded faces reads them poorly."""
    lum = (img * _LUMA).sum(1, keepdim=True)
    lum = F.avg_pool2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    d = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), _GRADIENT_KERNELS)
    # written out: torch's norm over a 2-long non-last dim took a tenth of a batch's render
    gradient = (d[:, :1] ** 2 + d[:, 1:] ** 2).sqrt()
    ink = torch.clamp((gradient - edge) / edge, 0.0, 1.0)
    flat = torch.round(img.clamp(0, 1) * levels) / levels
    return flat * (1.0 - 0.85 * ink)


def _paint_mascots(gx, gy, background, ids, muscles, rows, scene: Scene) -> tuple[torch.Tensor, np.ndarray]:
    placement = {k: np.asarray(getattr(scene, k))[rows] for k in ("hx", "hy", "scale", "yaw", "pitch", "roll", "light_dir", "ambient", "diffuse")}
    return paint_mascots(gx, gy, background, ids, {k: np.asarray(v)[rows] for k, v in muscles.items()}, placement, float(scene.pixel[0]))


def _degrade(img: torch.Tensor, nui: Nuisance, seeds: np.ndarray, blur_scale: float) -> np.ndarray:
    """Camera nuisance: defocus/motion-ish blur, sensor noise, then JPEG; returns uint8 HWC."""
    if np.any(nui.blur > 0):
        img = gaussian_blur(img, nui.blur * blur_scale, MAX_BLUR * blur_scale)
    if np.any(nui.noise > 0):
        noise = torch.stack([
            torch.randn(img.shape[1:], generator=torch.Generator().manual_seed(int(s) & 0x7FFFFFFF))
            for s in seeds
        ])  # fmt: skip
        img = img + noise * torch.as_tensor(nui.noise, dtype=torch.float32).reshape(-1, 1, 1, 1)
    out = to_uint8(img)
    for i, q in enumerate(nui.jpeg):
        if q > 0:
            out[i] = jpeg_roundtrip(out[i], int(q))
    return out


def _slice(n: Nuisance, sl: slice) -> Nuisance:
    return Nuisance(**{k: getattr(n, k)[sl] for k in Nuisance.__dataclass_fields__})


def _slice_identity(ident: Identity, sl: slice) -> Identity:
    return Identity(**{k: getattr(ident, k)[sl] for k in Identity.__dataclass_fields__})


def render_faces(
    expressions: np.ndarray,
    identity_ids: np.ndarray,
    *,
    size: int = 128,
    seed: int = 0,
    poses: np.ndarray | None = None,
    nuisance: bool = True,
    sample_seeds: np.ndarray | None = None,
) -> FaceBatch:
    """Render (B, size, size, 3) face crops.

    Identity i is a pure function of i. Poses (yaw/pitch/roll up to 30/20/20 degrees) are drawn
    from the sample seeds when not given. With nuisance=True, lighting direction and colour,
    framing jitter, gaze, background clutter, blur, noise and JPEG artefacts are drawn from the
    sample seeds; with nuisance=False none of them (frontal white light, grey background).
    Sample seeds default to a hash of (seed, index); pass `sample_seeds` to pin each face's
    nuisance independently of its batch position (triplets do).
    """
    import torch

    expr, ids = _check_inputs(expressions, identity_ids, poses)
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    b = len(expr)
    seeds = (
        sample_seeds_for(seed, b) if sample_seeds is None else np.asarray(sample_seeds, np.int64)
    )
    pose = sample_poses(seeds) if poses is None else np.asarray(poses, dtype=np.float32)
    ident = make_identities(ids)
    nui = sample_nuisance(seeds, nuisance)
    characters = torch.as_tensor(_is_character(ids))
    # FEC-like framing: the face box fills ~70% of the crop, hair may be cut at the top.
    scale = nui.scale * 1.2
    hx, hy = nui.shift[:, 0], -0.04 + nui.shift[:, 1]
    pixel = 2.0 / size
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) * pixel - 1.0
    gx, gy = centres.reshape(1, 1, -1), centres.reshape(1, -1, 1)
    half = (torch.arange(size // 2, dtype=torch.float32) + 0.5) * (2 * pixel) - 1.0
    images = np.empty((b, size, size, 3), dtype=np.uint8)
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    for start in range(0, b, chunk):
        sl = slice(start, min(start + chunk, b))
        n_sl, i_sl = _slice(nui, sl), _slice_identity(ident, sl)
        bg = paint_background(
            half.reshape(1, 1, -1), half.reshape(1, -1, 1), n_sl.bg, nuisance, 2 * pixel
        )
        bg = F.interpolate(bg, size=(size, size), mode="bilinear", align_corners=False)
        scene = _scene(n_sl, pose[sl], hx[sl], hy[sl], scale[sl], pixel)
        with torch.no_grad():
            muscles = _muscles(expr[sl], n_sl)
            img = paint(gx, gy, bg, i_sl, scene, muscles)
            toon = characters[sl].clone()
            mascot = _is_mascot(ids[sl])
            if mascot.any():  # replaces what `paint` drew for those rows
                img[mascot], inked = _paint_mascots(gx, gy, bg[mascot], ids[sl][mascot], muscles, mascot, scene)
                toon[np.flatnonzero(mascot)] = torch.as_tensor(inked)
            if toon.any():
                img[toon] = _cel_shade(img[toon])
        images[sl] = _degrade(img, n_sl, seeds[sl], size / 128.0)
    box = face_box(ident, _scene(nui, pose, hx, hy, scale, pixel), au_to_muscles(expr)["jaw_open"])
    boxes = ((box + 1.0) * (size / 2.0)).astype(np.float32)
    return FaceBatch(images=images, expressions=expr, identity_ids=ids, poses=pose, boxes=boxes)


def sample_face_boxes(seeds: np.ndarray, width: int, height: int) -> np.ndarray:
    """(B, 4) requested face boxes: 12-45% of the frame height wide, anywhere in the frame."""
    h = hash_uniform(seeds, salt=0xB0C5, n=3)
    w = (0.12 + 0.33 * h[:, 0]) * height
    hh = w * 1.35  # a face is taller than wide; only the width is honoured exactly
    cx = w / 2 + h[:, 1] * (width - w)
    cy = hh / 2 + h[:, 2] * (height - hh)
    return np.stack([cx - w / 2, cy - hh / 2, cx + w / 2, cy + hh / 2], axis=1).astype(np.float32)


def render_frames(
    expressions: np.ndarray,
    identity_ids: np.ndarray,
    *,
    width: int = 640,
    height: int = 480,
    face_boxes: np.ndarray | None = None,
    seed: int = 0,
    poses: np.ndarray | None = None,
    nuisance: bool = True,
    sample_seeds: np.ndarray | None = None,
    noise_seeds: np.ndarray | None = None,
) -> FaceBatch:
    """Render full (B, height, width, 3) camera frames with the face placed anywhere.

    `face_boxes` (B, 4) x0, y0, x1, y1 in pixels say where each face goes: the face is scaled so
    its width equals the box width and centred on the box centre; its height follows the face's
    own proportions (and jaw). The returned `boxes` are the exact face boxes rendered.
    Boxes are sampled from the seed when not given. Everything else as in render_faces.
    `noise_seeds` (B,) draw the sensor noise separately from the scene, so a video can keep
    one scene (same `sample_seeds` for every frame) with fresh noise per frame.
    """
    import torch

    expr, ids = _check_inputs(expressions, identity_ids, poses)
    if width < 16 or height < 16:
        raise ValueError(f"frames must be at least 16x16, got {width}x{height}")
    b = len(expr)
    seeds = (
        sample_seeds_for(seed, b) if sample_seeds is None else np.asarray(sample_seeds, np.int64)
    )
    pose = sample_poses(seeds) if poses is None else np.asarray(poses, dtype=np.float32)
    req = (
        sample_face_boxes(seeds, width, height)
        if face_boxes is None
        else np.asarray(face_boxes, np.float64)
    )
    ident = make_identities(ids)
    nui = sample_nuisance(seeds, nuisance)
    jaw = au_to_muscles(expr)["jaw_open"]
    unit = face_box(ident, _scene(nui, pose, np.zeros(b), np.zeros(b), np.ones(b), 1.0), jaw)
    k = (req[:, 2] - req[:, 0]) / (unit[:, 2] - unit[:, 0])  # pixels per crop unit
    hx = (req[:, 0] + req[:, 2]) / 2 - k * (unit[:, 0] + unit[:, 2]) / 2
    hy = (req[:, 1] + req[:, 3]) / 2 - k * (unit[:, 1] + unit[:, 3]) / 2
    scene_all = _scene(nui, pose, hx, hy, k, 1.0)
    boxes = face_box(ident, scene_all, jaw).astype(np.float32)

    gx_full = torch.arange(width, dtype=torch.float32) + 0.5
    gy_full = torch.arange(height, dtype=torch.float32) + 0.5
    half_h = height // 2
    bx = ((torch.arange(width // 2, dtype=torch.float32) + 0.5) * 2 - width / 2) / half_h
    by = ((torch.arange(half_h, dtype=torch.float32) + 0.5) * 2 - height / 2) / half_h
    images = np.empty((b, height, width, 3), dtype=np.uint8)
    muscles = _muscles(expr, nui)
    for i in range(b):
        sl = slice(i, i + 1)
        n_sl, i_sl = _slice(nui, sl), _slice_identity(ident, sl)
        bg = paint_background(
            bx.reshape(1, 1, -1), by.reshape(1, -1, 1), n_sl.bg, nuisance, 2.0 / half_h
        )
        frame = F.interpolate(bg, size=(height, width), mode="bilinear", align_corners=False)
        # Paint only where the person can be (hair, head, shoulders down to the bottom edge),
        # in bands of rows: the painter is memory-bound, and cache-sized tiles run 10x faster.
        rx, ry = float(i_sl.head_w[0] * k[i]), float(i_sl.head_h[0] * k[i])
        x0 = int(np.clip(hx[i] - 2.6 * rx, 0, width))
        x1 = int(np.clip(np.ceil(hx[i] + 2.6 * rx), 0, width))
        y0 = int(np.clip(hy[i] - 1.5 * ry, 0, height))
        scene = _scene(n_sl, pose[sl], hx[sl], hy[sl], k[sl], 1.0)
        m_i = {name: value[sl] for name, value in muscles.items()}
        band = max(8, _TILE_PIXELS // max(x1 - x0, 1))
        for top in range(y0, height if x1 > x0 else y0, band):
            bottom = min(top + band, height)
            with torch.no_grad():
                frame[:, :, top:bottom, x0:x1] = paint(
                    gx_full[x0:x1].reshape(1, 1, -1), gy_full[top:bottom].reshape(1, -1, 1),
                    frame[:, :, top:bottom, x0:x1], i_sl, scene, m_i,
                )  # fmt: skip
        noise_seed = seeds[sl] if noise_seeds is None else np.asarray(noise_seeds, np.int64)[sl]
        images[i] = _degrade(frame, n_sl, noise_seed, 1.0)[0]
    return FaceBatch(images=images, expressions=expr, identity_ids=ids, poses=pose, boxes=boxes)
