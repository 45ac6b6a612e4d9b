"""Built-in avatars: a RigSpec plus a reference renderer that stands in for the studio's engine.

* ``human_arkit``: a human head driven by ARKit's 52 blendshapes (the same 2.5D painter as the
  synthetic actors, with one fixed stylised identity, front view, studio light).
* ``cartoon``: a stylised toon with 14 controls, several exaggerated or non-linear (eyes that
  balloon, a mouth that opens with a power curve, eyes that snap into happy arcs), two signed,
  and a combined ``grin`` that no single action unit produces.
* ``robot``: a screen-faced robot with 8 controls: LED eyes, brows and mouth, antenna glow.
* ``cat``: a ginger cat head with 11 controls, 7 of them signed: ears that perk or flatten
  (and cock one against the other), slit-to-round pupils, lids, brow tufts, a snarl, a jaw that
  drops and slides, a curving 'w' mouth and whiskers that fan up or droop. Its retarget mixes
  action units the way an animal reads: ears flatten with anger, perk with surprise.

Every renderer is deterministic, vectorised over the batch, and visibly responds to every
control. ``expected_rig`` is the EVALUATION-ONLY semantic retarget from actor action units to
the avatar's controls: training code (renderer, animator) must never call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar.rig import RigControl, RigSpec
from freeavatar_server.synth.actors import AU_INDEX, N_AU
from freeavatar_server.synth.face import MUSCLES, Identity, Scene, paint
from freeavatar_server.synth.raster import cov, over, to_uint8


@dataclass(frozen=True)
class BuiltinAvatar:
    """A built-in avatar: its rig, its engine stand-in renderer and its evaluation mapping."""

    spec: RigSpec
    description: str
    render_fn: Callable[[torch.Tensor, int], torch.Tensor]  # (B, n) in range -> (B,3,S,S) [0,1]
    expected_fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_controls(self) -> int:
        return len(self.spec.controls)

    def neutral(self, batch: int = 1) -> np.ndarray:
        """(batch, n_controls) default rig values."""
        return np.tile(np.asarray(self.spec.defaults, dtype=np.float32), (batch, 1))

    def clip(self, rig: np.ndarray) -> np.ndarray:
        """Clamp each control to its [min, max]."""
        lo = np.array([c.min for c in self.spec.controls], dtype=np.float32)
        hi = np.array([c.max for c in self.spec.controls], dtype=np.float32)
        return np.clip(rig, lo, hi)

    def sample_rigs(self, n: int, rng: np.random.Generator, sparsity: float = 0.6) -> np.ndarray:
        """(n, n_controls) random rig vectors within range, each control off with `sparsity`:
        the (rig, image) training pairs a studio would render from its engine."""
        lo = np.array([c.min for c in self.spec.controls], dtype=np.float32)
        hi = np.array([c.max for c in self.spec.controls], dtype=np.float32)
        rig = lo + (hi - lo) * rng.random((n, self.n_controls), dtype=np.float32)
        keep = rng.random((n, self.n_controls)) >= sparsity
        return np.where(keep, rig, self.neutral(n)).astype(np.float32)

    def render(self, rig: np.ndarray, size: int = 128) -> np.ndarray:
        """(B, n_controls) rig values -> (B, size, size, 3) uint8 images, deterministic.

        Values outside a control's range are clamped to it.
        """
        rig = np.asarray(rig, dtype=np.float32)
        if rig.ndim != 2 or rig.shape[1] != self.n_controls:
            raise ValueError(f"{self.name}: rig must be (B, {self.n_controls}), got {rig.shape}")
        with torch.no_grad():
            img = self.render_fn(torch.from_numpy(self.clip(rig)), size)
        return to_uint8(img)

    def expected_rig(self, action_units: np.ndarray) -> np.ndarray:
        """EVALUATION ONLY -- never call this from training code.

        The semantic retarget of actor action units (B, N_AU) to this avatar's controls
        (B, n_controls): the ground truth a good animator should approach. The animator and the
        neural renderer may only learn from what a studio has (actor images or video, the
        avatar's (rig, image) samples, a few artist keyframes); reading this mapping during
        training would leak the synthetic world's labels and void every retargeting result.
        """
        aus = np.asarray(action_units, dtype=np.float32)
        if aus.ndim != 2 or aus.shape[1] != N_AU:
            raise ValueError(f"action_units must be (B, {N_AU}), got {aus.shape}")
        a = {name: aus[:, i] for name, i in AU_INDEX.items()}
        values = self.expected_fn(a)
        zero = np.zeros(len(aus), dtype=np.float32)
        rig = np.stack([values.get(n, zero) for n in self.spec.control_names], axis=1)
        return self.clip(rig.astype(np.float32))


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    return c.reshape(1, 1, -1), c.reshape(1, -1, 1)


def _rgb(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=torch.float32).reshape(1, 3, 1, 1)


def _smoothstep(lo: float, hi: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ---------------------------------------------------------------------------------------------
# human_arkit


# The avatar's fixed look, as a one-sample Identity (scalars -> (1,), colours -> (1, 3)).
_HUMAN_LOOK: dict[str, float | list[float]] = {
    "head_w": 0.6, "head_h": 0.74, "shape_p": 2.2, "jaw_w": 0.8, "eye_dx": 0.34, "eye_y": 0.0,
    "eye_w": 0.15, "eye_h": 0.07, "eye_tilt": 0.01, "iris_r": 0.05, "brow_y": -0.26,
    "brow_in": 0.1, "brow_out": 0.54, "brow_th": 0.03, "brow_arch": 0.035, "nose_y": 0.3,
    "nose_w": 0.14, "mouth_y": 0.56, "mouth_w": 0.3, "lip_up": 0.035, "lip_lo": 0.048,
    "ear_size": 1.0, "hairline": -0.55, "hair_part": 0.1, "hair_volume": 0.9, "hair_long": 0.0,
    "beard": 0.0, "mustache": 0.0, "glasses": 0.0, "wrinkles": 0.3,
    "skin": [0.86, 0.68, 0.55], "lip_rgb": [0.75, 0.38, 0.38], "iris_rgb": [0.25, 0.45, 0.3],
    "hair_rgb": [0.3, 0.18, 0.1], "brow_rgb": [0.23, 0.14, 0.08], "shirt_rgb": [0.2, 0.3, 0.55],
    "frame_rgb": [0.1, 0.1, 0.1],
}  # fmt: skip
_HUMAN = Identity(**{k: np.array([v], dtype=np.float64) for k, v in _HUMAN_LOOK.items()})
_ARKIT_INDEX = {name: i for i, name in enumerate(ARKIT_BLENDSHAPES)}


def _arkit_muscles(rig: torch.Tensor) -> dict[str, np.ndarray]:
    """ARKit blendshape weights -> painter muscles: the engine's own face rig."""
    r = {name: rig[:, i].numpy() for name, i in _ARKIT_INDEX.items()}
    zero = np.zeros(len(rig), dtype=np.float32)
    m = {k: zero for k in MUSCLES}
    for s, side in (("L", "Left"), ("R", "Right")):
        m[f"blink_{s}"] = r[f"eyeBlink{side}"]
        m[f"lid_tight_{s}"] = r[f"eyeSquint{side}"]
        m[f"lid_raise_{s}"] = r[f"eyeWide{side}"]
        m[f"brow_down_{s}"] = r[f"browDown{side}"]
        m[f"brow_inner_up_{s}"] = r["browInnerUp"]
        m[f"brow_outer_up_{s}"] = r[f"browOuterUp{side}"]
        m[f"cheek_{s}"] = r[f"cheekSquint{side}"]
        m[f"sneer_{s}"] = r[f"noseSneer{side}"]
        m[f"upper_lip_up_{s}"] = r[f"mouthUpperUp{side}"]
        m[f"lower_lip_down_{s}"] = r[f"mouthLowerDown{side}"]
        m[f"corner_pull_{s}"] = r[f"mouthSmile{side}"]
        m[f"corner_depress_{s}"] = r[f"mouthFrown{side}"]
        m[f"dimple_{s}"] = r[f"mouthDimple{side}"]
        m[f"stretch_{s}"] = r[f"mouthStretch{side}"]
        m[f"press_{s}"] = r[f"mouthPress{side}"]
        # ARKit "Left" is the face's left; in and out are relative to the nose.
        out_dir = 1.0 if s == "L" else -1.0  # image +u is the face's left
        m[f"gaze_x_{s}"] = out_dir * (r[f"eyeLookOut{side}"] - r[f"eyeLookIn{side}"])
        m[f"gaze_y_{s}"] = r[f"eyeLookDown{side}"] - r[f"eyeLookUp{side}"]
    m["jaw_open"] = r["jawOpen"]
    m["lips_part"] = 0.5 * r["jawOpen"]
    m["jaw_side"] = r["jawLeft"] - r["jawRight"]
    m["jaw_forward"] = r["jawForward"]
    m["mouth_close"] = r["mouthClose"]
    m["funnel"] = r["mouthFunnel"]
    m["pucker"] = r["mouthPucker"]
    m["mouth_side"] = r["mouthLeft"] - r["mouthRight"]
    m["roll_lower"] = r["mouthRollLower"]
    m["roll_upper"] = r["mouthRollUpper"]
    m["chin_raise"] = r["mouthShrugLower"]
    m["shrug_upper"] = r["mouthShrugUpper"]
    m["cheek_puff"] = r["cheekPuff"]
    m["tongue_out"] = r["tongueOut"]
    return m


def _render_human(rig: torch.Tensor, size: int) -> torch.Tensor:
    return render_human_muscles(_arkit_muscles(rig), len(rig), size)


def render_human_muscles(muscles: dict[str, np.ndarray], b: int, size: int) -> torch.Tensor:
    """The human avatar's look, scene and light, driven by painter muscles directly: lets
    evaluation compare an actor's expression and its ARKit retarget on the same face."""
    ident = Identity(
        **{k: np.repeat(getattr(_HUMAN, k), b, axis=0) for k in Identity.__dataclass_fields__}
    )
    d = np.array([0.3, -0.4, 1.0]) / np.linalg.norm([0.3, -0.4, 1.0])
    zeros = np.zeros(b)
    scene = Scene(
        hx=zeros, hy=np.full(b, -0.02), scale=np.full(b, 1.3), yaw=zeros, pitch=zeros, roll=zeros,
        pixel=np.full(b, 2.0 / size), light_dir=np.tile(d, (b, 1)), light_rgb=np.ones((b, 3)),
        ambient=np.full(b, 0.5), diffuse=np.full(b, 0.6),
    )  # fmt: skip
    gx, gy = _grid(size)
    bg = _rgb(0.55, 0.62, 0.7).expand(b, 3, size, size).clone()
    bg = bg * (1.0 - 0.25 * (gy + 1.0) / 2.0).unsqueeze(1)  # studio backdrop vignette
    return paint(gx, gy, bg, ident, scene, muscles)


def _expected_human(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EVALUATION ONLY. FACS -> ARKit, one to one where ARKit has the shape (AU45 -> eyeBlink,
    AU7 -> eyeSquint, AU5 -> eyeWide, AU4 -> browDown, AU1 -> browInnerUp, AU2 -> browOuterUp,
    AU6 -> cheekSquint, AU9 -> noseSneer, AU10 -> mouthUpperUp, AU12 -> mouthSmile,
    AU15 -> mouthFrown, AU14 -> mouthDimple, AU20 -> mouthStretch, AU24 -> mouthPress,
    AU26 -> jawOpen, AU30 -> jawLeft/Right, AU18 -> mouthPucker, AU17 -> mouthShrugLower,
    AU34 -> cheekPuff; AU25 without a jaw drop -> mouthLowerDown). Gaze, tongue, funnel, roll,
    mouthClose, mouthLeft/Right and jawForward have no action unit here and stay 0."""
    out: dict[str, np.ndarray] = {}
    for s, side in (("L", "Left"), ("R", "Right")):
        out[f"eyeBlink{side}"] = a[f"blink_{s}"]
        out[f"eyeSquint{side}"] = a["lid_tighten"]
        out[f"eyeWide{side}"] = a["upper_lid_raise"]
        out[f"browDown{side}"] = a["brow_lower"]
        out[f"browOuterUp{side}"] = a[f"brow_outer_raise_{s}"]
        out[f"cheekSquint{side}"] = a["cheek_raise"]
        out[f"noseSneer{side}"] = a["nose_wrinkle"]
        out[f"mouthUpperUp{side}"] = a["upper_lip_raise"]
        out[f"mouthSmile{side}"] = a[f"lip_corner_pull_{s}"]
        out[f"mouthFrown{side}"] = a[f"lip_corner_depress_{s}"]
        out[f"mouthDimple{side}"] = a["dimple"]
        out[f"mouthStretch{side}"] = a["lip_stretch"]
        out[f"mouthPress{side}"] = a["lip_press"]
        out[f"mouthLowerDown{side}"] = 0.5 * a["lips_part"] * (1.0 - a["jaw_drop"])
    out["browInnerUp"] = a["brow_inner_raise"]
    out["jawOpen"] = a["jaw_drop"]
    out["jawLeft"] = a["jaw_sideways_L"]
    out["jawRight"] = a["jaw_sideways_R"]
    out["mouthPucker"] = a["lip_pucker"]
    out["mouthShrugLower"] = a["chin_raise"]
    out["cheekPuff"] = a["cheek_puff"]
    return out


def _human() -> BuiltinAvatar:
    return BuiltinAvatar(
        spec=RigSpec.arkit52("human_arkit"),
        description="human head, ARKit's 52 blendshapes",
        render_fn=_render_human,
        expected_fn=_expected_human,
    )


# ---------------------------------------------------------------------------------------------
# cartoon

_CARTOON_CONTROLS = (
    RigControl("blink_L", group="eye", mirror="blink_R", arkit_alias="eyeBlinkLeft"),
    RigControl("blink_R", group="eye", mirror="blink_L", arkit_alias="eyeBlinkRight"),
    RigControl("brows_up", group="brow", arkit_alias="browInnerUp"),
    RigControl("brows_angry", group="brow"),
    RigControl("brows_sad", group="brow"),
    RigControl("eyes_wide", group="eye"),
    RigControl("happy_eyes", group="eye"),
    RigControl("grin", group="mouth"),
    RigControl("frown", group="mouth"),
    RigControl("mouth_open", group="mouth", arkit_alias="jawOpen"),
    RigControl("mouth_O", group="mouth", arkit_alias="mouthPucker"),
    RigControl("smirk", min=-1.0, max=1.0, group="mouth"),
    RigControl("blush", group="cheek"),
    RigControl("squash_stretch", min=-1.0, max=1.0, group="head"),
)


def _render_cartoon(rig: torch.Tensor, size: int) -> torch.Tensor:
    b = len(rig)
    c = {ctl.name: rig[:, i].reshape(b, 1, 1) for i, ctl in enumerate(_CARTOON_CONTROLS)}
    gx, gy = _grid(size)
    soft = 2.4 / size
    img = (_rgb(0.62, 0.85, 0.95) + 0.15 * gy.unsqueeze(1)).expand(b, 3, size, size).clone()
    fa = torch.zeros(b, size, size)
    # squash & stretch, cubic so small values barely move and extremes go cartoon-far
    ss = c["squash_stretch"]
    ss_eff = 0.5 * ss + 0.5 * ss * ss * ss
    hw, hh = 0.74 * (1.0 - 0.22 * ss_eff), 0.7 * (1.0 + 0.25 * ss_eff)
    hx, hy = gx / hw, (gy - 0.08 - 0.1 * ss_eff) / hh
    head = 1.0 - (hx * hx + hy * hy).sqrt()
    img, fa = over(img, fa, _rgb(0.15, 0.1, 0.05), cov(head * 0.72 + 0.03, soft))
    img, fa = over(img, fa, _rgb(1.0, 0.78, 0.3), cov(head * 0.72, soft))
    # hair tuft
    tuft = -(
        gy
        - (-0.6 - 0.1 * ss_eff)
        + 0.18 * (1.0 - (gx / 0.18).abs()).clamp(min=0.0) * (0.5 + 0.5 * torch.cos(gx * 50.0))
    )
    img, fa = over(
        img,
        fa,
        _rgb(0.55, 0.3, 0.1),
        cov(tuft, soft) * cov(0.22 - gx.abs(), soft) * cov(gy + 0.85, soft),
    )
    ax = gx.abs()
    left = gx > 0  # the character's left is image right, as for actors
    # blush: round pink cheeks
    bx, by = (ax - 0.45) / 0.14, (gy - 0.25) / 0.09
    img, fa = over(
        img,
        fa,
        _rgb(1.0, 0.45, 0.5),
        cov((1.0 - bx * bx - by * by) * 0.1, soft) * 0.85 * c["blush"],
    )
    # eyes: balloon with eyes_wide (quadratic), close with blink, snap to ^ arcs with happy_eyes
    happy = _smoothstep(0.3, 0.7, c["happy_eyes"])
    blink = torch.where(left, c["blink_L"], c["blink_R"])
    wide = c["eyes_wide"]
    er = 0.14 * (1.0 + 0.9 * wide * wide)
    eh = er * 1.25 * (1.0 - blink) * (1.0 - happy) * (1.0 - 0.3 * c["happy_eyes"]) + 1e-3
    ex, ey = (ax - 0.3) / er, (gy + 0.02) / eh
    eye = (1.0 - ex * ex - ey * ey) * eh
    img, fa = over(img, fa, _rgb(0.1, 0.06, 0.04), cov(eye + 0.012, soft))
    img, fa = over(img, fa, _rgb(1.0, 1.0, 1.0), cov(eye, soft))
    pr = 0.06 * (1.0 - 0.4 * wide)
    px, py = ax - 0.3, gy + 0.02 + 0.01 * c["brows_sad"]
    pupil = cov(pr - (px * px + py * py).sqrt(), soft) * cov(eye, soft)
    img, fa = over(img, fa, _rgb(0.05, 0.05, 0.1), pupil)
    lid = (
        cov(0.018 - (gy + 0.02).abs(), soft)
        * cov(0.16 - (ax - 0.3).abs(), soft)
        * _smoothstep(0.6, 0.95, blink)
    )
    arc_v = -0.02 - 0.09 * (1.0 - ((ax - 0.3) / 0.15) ** 2).clamp(min=0.0)
    arc = cov(0.022 - (gy - arc_v).abs(), soft) * cov(0.15 - (ax - 0.3).abs(), soft) * happy
    img, fa = over(img, fa, _rgb(0.1, 0.06, 0.04), torch.maximum(lid, arc))
    # brows: bars that rise and tilt (angry: inner end down; sad: inner end up)
    tilt = 0.16 * (c["brows_angry"] - c["brows_sad"])
    bv = -0.27 - 0.16 * c["brows_up"] - 0.1 * wide * wide + tilt * (0.45 - ax) / 0.3 - 0.15 * tilt
    brow = cov(0.035 - (gy - bv).abs(), soft) * cov(0.15 - (ax - 0.3).abs(), soft)
    img, fa = over(img, fa, _rgb(0.35, 0.18, 0.05), brow)
    # mouth: width, curve and opening; grin = wide + corners up + teeth (no single AU does this)
    grin, frown, rnd = c["grin"], c["frown"], c["mouth_O"]
    opened = 0.32 * c["mouth_open"] ** 0.6  # exaggerated: small values already open wide
    w = 0.24 * (1.0 + 0.7 * grin - 0.55 * rnd) + 0.04 * c["mouth_open"]
    sgn = torch.where(left, 1.0, -1.0)
    curve = 0.13 * grin - 0.12 * frown + 0.1 * c["smirk"] * sgn
    mu = gx / w
    q = (1.0 - mu * mu).clamp(min=0.0)
    line = 0.42 + 0.1 * ss_eff + curve * (0.5 - mu * mu) - 0.04 * grin
    h = opened + 0.1 * rnd + 0.09 * grin
    top = line - 0.25 * h * q.sqrt()
    bot = line + h * q ** (0.5 - 0.25 * rnd)
    mouth = cov(torch.minimum(gy - top, bot - gy) + 0.018, soft) * cov((1.0 - mu.abs()) * w, soft)
    img, fa = over(img, fa, _rgb(0.35, 0.05, 0.08), mouth)
    teeth = mouth * cov(top + 0.05 - gy, soft) * cov(torch.minimum(gy - top, bot - gy), soft)
    img, fa = over(img, fa, _rgb(1.0, 1.0, 0.97), teeth * (0.3 + 0.7 * grin) * (h > 0.03))
    tongue_y = (gy - bot + 0.05) / 0.06
    tongue = (
        mouth
        * cov((1.0 - (gx / (0.6 * w)) ** 2 - tongue_y * tongue_y) * 0.05, soft)
        * cov(bot - gy, soft)
    )
    img, fa = over(img, fa, _rgb(0.95, 0.45, 0.5), tongue * _smoothstep(0.05, 0.2, h))
    return img


def _expected_cartoon(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EVALUATION ONLY. Blinks per side; brows_up from AU1+AU2; brows_angry = AU4; brows_sad =
    AU1 without AU2; eyes_wide = AU5; happy_eyes from AU6; grin = both AU12 scaled by AU6;
    frown = AU15; mouth_open = AU26 (+AU25); mouth_O = AU18; smirk = AU12 L - R (signed);
    blush from AU34 and AU6; squash_stretch = jaw drop/surprise (+) against AU17/AU24 (-)."""
    outer = 0.5 * (a["brow_outer_raise_L"] + a["brow_outer_raise_R"])
    pull = 0.5 * (a["lip_corner_pull_L"] + a["lip_corner_pull_R"])
    return {
        "blink_L": a["blink_L"],
        "blink_R": a["blink_R"],
        "brows_up": np.clip(0.6 * a["brow_inner_raise"] + 0.6 * outer, 0, 1),
        "brows_angry": a["brow_lower"],
        "brows_sad": np.clip(a["brow_inner_raise"] - outer, 0, 1),
        "eyes_wide": a["upper_lid_raise"],
        "happy_eyes": np.clip(1.2 * a["cheek_raise"] - 0.1, 0, 1),
        "grin": np.minimum(a["lip_corner_pull_L"], a["lip_corner_pull_R"])
        * (0.5 + 0.5 * a["cheek_raise"]),
        "frown": 0.5 * (a["lip_corner_depress_L"] + a["lip_corner_depress_R"]),
        "mouth_open": np.clip(a["jaw_drop"] + 0.3 * a["lips_part"], 0, 1),
        "mouth_O": a["lip_pucker"],
        "smirk": np.clip(a["lip_corner_pull_L"] - a["lip_corner_pull_R"], -1, 1) * (pull > 0),
        "blush": np.clip(a["cheek_puff"] + 0.4 * a["cheek_raise"], 0, 1),
        "squash_stretch": np.clip(
            0.8 * a["jaw_drop"]
            + 0.2 * a["upper_lid_raise"]
            - 0.6 * a["chin_raise"]
            - 0.4 * a["lip_press"],
            -1,
            1,
        ),
    }


def _cartoon() -> BuiltinAvatar:
    return BuiltinAvatar(
        spec=RigSpec("cartoon", _CARTOON_CONTROLS),
        description="stylised toon, 14 controls (exaggerated, non-linear, a combined grin)",
        render_fn=_render_cartoon,
        expected_fn=_expected_cartoon,
    )


# ---------------------------------------------------------------------------------------------
# robot

_ROBOT_CONTROLS = (
    RigControl("eye_squint", group="eye"),
    RigControl("eye_size", group="eye"),
    RigControl("brow_tilt", min=-1.0, max=1.0, group="brow"),
    RigControl("mouth_open", group="mouth", arkit_alias="jawOpen"),
    RigControl("mouth_curve", min=-1.0, max=1.0, group="mouth"),
    RigControl("mouth_width", min=-1.0, max=1.0, group="mouth"),
    RigControl("antenna_glow", group="head"),
    RigControl("panel_blush", group="cheek"),
)


def _render_robot(rig: torch.Tensor, size: int) -> torch.Tensor:
    b = len(rig)
    c = {ctl.name: rig[:, i].reshape(b, 1, 1) for i, ctl in enumerate(_ROBOT_CONTROLS)}
    gx, gy = _grid(size)
    soft = 2.4 / size
    img = (_rgb(0.25, 0.22, 0.3) + 0.1 * gy.unsqueeze(1)).expand(b, 3, size, size).clone()
    fa = torch.zeros(b, size, size)
    ax = gx.abs()
    # antenna: stalk and a bulb whose glow (colour and halo) follows antenna_glow
    glow = c["antenna_glow"]
    stalk = cov(0.02 - ax, soft) * cov(gy + 0.88, soft) * cov(-0.6 - gy, soft)
    img, fa = over(img, fa, _rgb(0.6, 0.6, 0.65), stalk)
    bulb_d = (gx * gx + (gy + 0.88) ** 2).sqrt()
    halo = (1.0 - bulb_d / (0.08 + 0.22 * glow)).clamp(min=0.0) * glow
    img, fa = over(img, fa, _rgb(1.0, 0.9, 0.3), halo * 0.7)
    bulb_rgb = _rgb(0.45, 0.1, 0.1) + (
        _rgb(1.0, 0.95, 0.5) - _rgb(0.45, 0.1, 0.1)
    ) * glow.unsqueeze(1)
    img, fa = over(img, fa, bulb_rgb, cov(0.07 - bulb_d, soft))
    # head: rounded box; screen: darker rounded box
    head = 1.0 - ((gx / 0.82) ** 6 + ((gy + 0.02) / 0.62) ** 6) ** (1 / 6)
    img, fa = over(
        img,
        fa,
        _rgb(0.72, 0.74, 0.78) * (1.05 - 0.25 * (gy + 0.6)).clamp(0.6, 1.1).unsqueeze(1),
        cov(head * 0.7, soft),
    )
    screen = 1.0 - ((gx / 0.66) ** 6 + ((gy + 0.02) / 0.46) ** 6) ** (1 / 6)
    img, fa = over(img, fa, _rgb(0.05, 0.08, 0.1), cov(screen * 0.5, soft))
    led = _rgb(0.3, 0.95, 1.0)
    # eyes: LED ovals, taller with eye_size, flattened by eye_squint
    ew = 0.12 * (1.0 + 0.45 * c["eye_size"])
    eh = 0.12 * (1.0 + 0.6 * c["eye_size"]) * (1.0 - 0.88 * c["eye_squint"]) + 0.008
    ex, ey = (ax - 0.3) / ew, (gy + 0.1) / eh
    img, fa = over(img, fa, led, cov((1.0 - ex * ex - ey * ey) * eh * 0.5, soft))
    # brows: LED bars tilted inner-down (angry, +) or inner-up (sad, -)
    bv = -0.3 - 0.05 * c["eye_size"] + 0.12 * c["brow_tilt"] * (0.42 - ax) / 0.24
    brow = cov(0.022 - (gy - bv).abs(), soft) * cov(0.12 - (ax - 0.3).abs(), soft)
    img, fa = over(img, fa, led, brow)
    # mouth: an LED stroke along a curve, corners up (+, a smile) or down (-), filled open below
    # it (image y grows downwards: the corners' y falls as mouth_curve rises)
    mw = 0.3 * (1.0 + 0.45 * c["mouth_width"])
    mu = gx / mw
    q = (1.0 - mu * mu).clamp(min=0.0)
    line = 0.2 - 0.12 * c["mouth_curve"] * (mu * mu - 0.5)
    opened = 0.2 * c["mouth_open"] * q.sqrt()
    stroke = cov(torch.minimum(gy - line + 0.02, line + opened + 0.02 - gy), soft) * cov(
        (1.0 - mu.abs()) * mw, soft
    )
    img, fa = over(img, fa, led, stroke)
    inner = cov(torch.minimum(gy - line - 0.02, line + opened - 0.02 - gy), soft) * cov(
        (0.92 - mu.abs()) * mw, soft
    )
    img, fa = over(img, fa, _rgb(0.05, 0.25, 0.3), inner)
    # cheek panel LEDs
    cheek = cov(0.05 - (ax - 0.52).abs(), soft) * cov(0.025 - (gy - 0.12).abs(), soft)
    img, fa = over(img, fa, _rgb(1.0, 0.45, 0.2), cheek * (0.15 + 0.85 * c["panel_blush"]))
    return img


def _expected_robot(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EVALUATION ONLY. eye_squint = blink or lid tighten/cheek raise; eye_size = AU5;
    brow_tilt = AU4 - AU1 (signed); mouth_open = AU26 (or AU25); mouth_curve = AU12 - AU15;
    mouth_width = AU20 (+ a smile's widening) - AU18; antenna_glow = surprise (AU5, AU2);
    panel_blush = AU6."""
    blink = 0.5 * (a["blink_L"] + a["blink_R"])
    pull = 0.5 * (a["lip_corner_pull_L"] + a["lip_corner_pull_R"])
    depress = 0.5 * (a["lip_corner_depress_L"] + a["lip_corner_depress_R"])
    outer = 0.5 * (a["brow_outer_raise_L"] + a["brow_outer_raise_R"])
    return {
        "eye_squint": np.clip(
            np.maximum(blink, 0.6 * a["lid_tighten"] + 0.4 * a["cheek_raise"]), 0, 1
        ),
        "eye_size": a["upper_lid_raise"],
        "brow_tilt": np.clip(a["brow_lower"] - a["brow_inner_raise"], -1, 1),
        "mouth_open": np.clip(np.maximum(a["jaw_drop"], 0.6 * a["lips_part"]), 0, 1),
        "mouth_curve": np.clip(pull - depress, -1, 1),
        "mouth_width": np.clip(a["lip_stretch"] + 0.5 * pull - a["lip_pucker"], -1, 1),
        "antenna_glow": np.clip(0.5 * a["upper_lid_raise"] + 0.5 * outer, 0, 1),
        "panel_blush": a["cheek_raise"],
    }


def _robot() -> BuiltinAvatar:
    return BuiltinAvatar(
        spec=RigSpec("robot", _ROBOT_CONTROLS),
        description="screen-faced robot, 8 controls",
        render_fn=_render_robot,
        expected_fn=_expected_robot,
    )


# ---------------------------------------------------------------------------------------------
# cat

_CAT_CONTROLS = (
    RigControl("ears_perk", min=-1.0, max=1.0, group="ear"),
    RigControl("ear_tilt", min=-1.0, max=1.0, group="ear"),
    RigControl("blink_L", group="eye", mirror="blink_R", arkit_alias="eyeBlinkLeft"),
    RigControl("blink_R", group="eye", mirror="blink_L", arkit_alias="eyeBlinkRight"),
    RigControl("pupils", min=-1.0, max=1.0, group="eye"),
    RigControl("brows", min=-1.0, max=1.0, group="brow"),
    RigControl("snarl", group="nose"),
    RigControl("jaw_open", group="mouth", arkit_alias="jawOpen"),
    RigControl("jaw_side", min=-1.0, max=1.0, group="mouth"),
    RigControl("mouth_curve", min=-1.0, max=1.0, group="mouth"),
    RigControl("whiskers", min=-1.0, max=1.0, group="cheek"),
)
_FUR = (0.93, 0.58, 0.27)
_FUR_DARK = (0.66, 0.33, 0.12)
_CAT_INK = (0.18, 0.09, 0.05)
_Layers = tuple[torch.Tensor, torch.Tensor]  # (premultiplied image, alpha) being composited


def _cat_ears(
    img: torch.Tensor, fa: torch.Tensor, c: dict[str, torch.Tensor], soft: float
) -> _Layers:
    """Two triangles pivoting on their base in the head: perk (+) stands them tall and upright,
    flatten (-) swings them out sideways and shorter; ear_tilt perks one while it drops the
    other (+ raises the face's left ear, as a raised left outer brow does)."""
    gx, gy = _grid(img.shape[-1])
    ax = gx.abs()
    side = torch.where(gx > 0, 1.0, -1.0)  # the face's left is image right
    pose = (c["ears_perk"] + c["ear_tilt"] * side).clamp(-1.0, 1.0)
    up, flat = pose.clamp(min=0.0), (-pose).clamp(min=0.0)
    angle = 0.28 - 0.22 * up + 0.8 * flat  # outward from vertical, radians
    height = 0.44 * (1.0 + 0.25 * up - 0.3 * flat)
    sin, cos = torch.sin(angle), torch.cos(angle)
    rx, ry = ax - 0.44, gy + 0.36  # pivot: the middle of the ear's base, inside the head
    along = rx * sin - ry * cos  # from the base towards the tip
    across = rx * cos + ry * sin
    for scale, width, rgb in ((1.0, 0.2, _FUR), (0.72, 0.11, (0.98, 0.66, 0.68))):
        h = height * scale
        edge = (width * (1.0 - along / h) - across.abs()) * 0.9  # ~distance to a slanted side
        img, fa = over(img, fa, _rgb(*rgb), cov(torch.minimum(edge, along + 0.1), soft))
    return img, fa


def _cat_eyes(
    img: torch.Tensor, fa: torch.Tensor, c: dict[str, torch.Tensor], soft: float
) -> _Layers:
    """Almond eyes tilted up at the outer corner; pupils narrow to slits (-) or dilate round
    (+); fur lids close from above and below onto a curved line with each side's blink."""
    gx, gy = _grid(img.shape[-1])
    ax = gx.abs()
    blink = torch.where(gx > 0, c["blink_L"], c["blink_R"])
    ex, ey = ax - 0.3, gy + 0.02 + 0.18 * (ax - 0.3)  # eye-centred, outer corner raised
    ew, eh = 0.15, 0.1
    eye = 1.0 - (ex / ew) ** 2 - (ey / eh) ** 2
    img, fa = over(img, fa, _rgb(*_CAT_INK), cov(eye * eh + 0.016, soft))
    img, fa = over(img, fa, _rgb(0.62, 0.8, 0.22), cov(eye * eh, soft))
    p = c["pupils"]
    pw = 0.045 + 0.04 * p.clamp(min=0.0) - 0.033 * (-p).clamp(min=0.0)
    pupil = 1.0 - (ex / pw) ** 2 - (ey / 0.092) ** 2
    inside = cov(eye * eh, soft)
    img, fa = over(img, fa, _rgb(0.04, 0.03, 0.03), cov(pupil * pw, soft) * inside)
    shine = 0.022 - ((ex - 0.035) ** 2 + (ey + 0.04) ** 2).sqrt()
    img, fa = over(img, fa, _rgb(1.0, 1.0, 1.0), cov(shine, soft) * inside)
    # lids meet a little below the middle, so a closed eye is a downward-curved line
    closed = 0.02 + 0.03 * (1.0 - (ex / ew) ** 2).clamp(min=0.0)
    top = -eh * 1.1 + (closed + eh * 1.1) * blink
    bottom = eh * 1.1 - (eh * 1.1 - closed) * blink
    lid = cov(eye * eh + 0.02, soft) * torch.maximum(cov(top - ey, soft), cov(ey - bottom, soft))
    img, fa = over(img, fa, _rgb(*_FUR), lid)
    margin = cov(0.014 - (ey - top).abs(), soft) * cov(eye * eh + 0.016, soft)
    img, fa = over(img, fa, _rgb(*_CAT_INK), margin * _smoothstep(0.05, 0.3, blink))
    # brows: darker fur tufts that rise (+) or drop with the inner end lowest (-, a scowl)
    raise_, lower = c["brows"].clamp(min=0.0), (-c["brows"]).clamp(min=0.0)
    bv = -0.2 - 0.11 * raise_ + 0.04 * lower + 0.1 * lower * (0.44 - ax) / 0.26
    bv = bv + 0.6 * (ax - 0.31) ** 2  # a slight arch
    brow = cov(0.024 - (gy - bv).abs(), soft) * cov(0.13 - (ax - 0.31).abs(), soft)
    img, fa = over(img, fa, _rgb(*_FUR_DARK), brow)
    return img, fa


def _cat_mouth(
    img: torch.Tensor, fa: torch.Tensor, c: dict[str, torch.Tensor], soft: float
) -> _Layers:
    """Muzzle pads, a lower jaw that drops and slides sideways, a snarl that lifts the nose,
    wrinkles the snout and bares the fangs, and the cat's 'w' mouth whose corners curve."""
    gx, gy = _grid(img.shape[-1])
    ax = gx.abs()
    jaw, snarl, curve = c["jaw_open"], c["snarl"], c["mouth_curve"]
    shift = 0.09 * c["jaw_side"]  # + towards the face's left (image right)
    drop = 0.2 * jaw
    # chin under the pads (white fluff, so its slide shows against the cream pads)
    cx, cy = (gx - shift) / 0.11, (gy - 0.43 - 0.8 * drop) / 0.075
    img, fa = over(img, fa, _rgb(*_CAT_INK), cov((1.0 - cx * cx - cy * cy) * 0.075 + 0.01, soft))
    img, fa = over(img, fa, _rgb(1.0, 0.97, 0.93), cov((1.0 - cx * cx - cy * cy) * 0.075, soft))
    px, py = (ax - 0.1) / 0.15, (gy - 0.3) / 0.1
    img, fa = over(img, fa, _rgb(0.99, 0.88, 0.72), cov((1.0 - px * px - py * py) * 0.1, soft))
    # the 'w' line: from under the nose out to each corner, corners up (+) or down (-)
    wline = 0.31 + 0.035 * torch.sin(ax * (np.pi / 0.13)) - 0.07 * curve * (ax / 0.14) ** 2
    # the open mouth: from a little above the line (a snarl lifts the lip) down to the jaw
    mu = (gx - 0.5 * shift) / (0.1 + 0.04 * jaw)
    q = (1.0 - mu * mu).clamp(min=0.0)
    top = wline - 0.08 * snarl * q.sqrt()
    bot = wline + (drop + 0.005) * q.sqrt()
    mouth = cov(torch.minimum(gy - top, bot - gy), soft) * cov(1.0 - mu.abs(), soft)
    mouth = mouth * _smoothstep(0.0, 0.08, jaw + snarl)
    img, fa = over(img, fa, _rgb(0.4, 0.06, 0.1), mouth)
    tx, ty = mu / 0.7, (gy - bot + 0.035) / 0.045
    img, fa = over(
        img, fa, _rgb(0.95, 0.5, 0.55), mouth * cov((1 - tx * tx - ty * ty) * 0.04, soft)
    )
    # fangs hang from the upper lip; they show as soon as the lip lifts or the jaw drops
    fx, fy = (ax - 0.06) / 0.02, gy - top
    fang = cov(torch.minimum((1.0 - fy / 0.06) * 0.02 - (fx * 0.02).abs(), fy + 0.02), soft)
    img, fa = over(img, fa, _rgb(1.0, 1.0, 0.96), fang * mouth)
    stroke = cov(0.013 - (gy - wline).abs(), soft) * cov(0.15 - ax, soft)
    img, fa = over(img, fa, _rgb(*_CAT_INK), stroke)
    # nose: a pink rounded triangle, lifted by the snarl; philtrum down to the lip
    nose_y = 0.2 - 0.03 * snarl
    ny = gy - nose_y
    nose = torch.minimum(0.05 - ny.abs() * 0.9, (0.07 - 0.9 * ny) * 0.7 - ax)
    img, fa = over(img, fa, _rgb(0.88, 0.45, 0.5), cov(nose, soft))
    philtrum = cov(0.011 - ax, soft) * cov(gy - nose_y - 0.04, soft) * cov(top - gy, soft)
    img, fa = over(img, fa, _rgb(*_CAT_INK), philtrum)
    # snarl wrinkles across the bridge of the snout
    for row in (0.06, 0.11):
        arc = row - 0.03 * snarl - 0.6 * gx * gx
        wrinkle = cov(0.012 - (gy - arc).abs(), soft) * cov(0.1 - ax, soft)
        img, fa = over(img, fa, _rgb(*_FUR_DARK), wrinkle * _smoothstep(0.05, 0.5, snarl))
    return img, fa


def _cat_whiskers(
    img: torch.Tensor, fa: torch.Tensor, c: dict[str, torch.Tensor], soft: float
) -> _Layers:
    """Three whiskers a side fanning from the pads: fanned up and forward (+, content or
    puffed cheeks), drooping (-, sad)."""
    gx, gy = _grid(img.shape[-1])
    ax = gx.abs()
    w = c["whiskers"]
    run = (ax - 0.2).clamp(min=0.0)
    for i, slope in enumerate((-0.3, 0.0, 0.3)):
        tilt = slope * (1.0 + 0.5 * w) - 0.35 * w  # + fans them out and lifts them
        y0 = 0.28 + 0.035 * i
        path = y0 + tilt * run + 0.25 * run * run  # a little natural sag
        length = cov(0.66 - run, soft) * cov(ax - 0.2, soft)
        img, fa = over(
            img, fa, _rgb(0.25, 0.17, 0.12), cov(0.009 - (gy - path).abs(), soft) * length
        )
    return img, fa


def _render_cat(rig: torch.Tensor, size: int) -> torch.Tensor:
    b = len(rig)
    c = {ctl.name: rig[:, i].reshape(b, 1, 1) for i, ctl in enumerate(_CAT_CONTROLS)}
    gx, gy = _grid(size)
    soft = 2.4 / size
    img = (_rgb(0.6, 0.78, 0.62) + 0.12 * gy.unsqueeze(1)).expand(b, 3, size, size).clone()
    fa = torch.zeros(b, size, size)
    img, fa = _cat_ears(img, fa, c, soft)
    # head: a wide rounded shape, fuller at the cheeks; darker fur towards the chin
    ax = gx.abs()
    head = 1.0 - ((ax / 0.78) ** 2.5 + ((gy - 0.08).abs() / 0.6) ** 2.5) ** 0.4
    shade = (1.05 - 0.2 * (gy + 0.5)).clamp(0.75, 1.05).unsqueeze(1)
    img, fa = over(img, fa, _rgb(*_FUR) * shade, cov(head * 0.6, soft))
    # tabby stripes: three on the forehead, two on each cheek (fixed markings)
    on_head = cov(head * 0.6, soft)
    taper = 0.025 * (1.0 - (gy + 0.48) / 0.2)  # wide at the hairline, to a point downwards
    for x0 in (-0.09, 0.0, 0.09):
        stripe = cov(taper - (gx - x0).abs(), soft) * cov(gy + 0.5, soft)
        img, fa = over(img, fa, _rgb(*_FUR_DARK), stripe * on_head)
    for y0 in (0.1, 0.19):
        slant = gy - y0 + 0.1 * (ax - 0.62)
        stripe = cov(0.018 - slant.abs(), soft) * cov(0.11 - (ax - 0.66).abs(), soft)
        img, fa = over(img, fa, _rgb(*_FUR_DARK), stripe * on_head)
    img, fa = _cat_eyes(img, fa, c, soft)
    img, fa = _cat_mouth(img, fa, c, soft)
    img, fa = _cat_whiskers(img, fa, c, soft)
    return img


def _expected_cat(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EVALUATION ONLY. ears_perk: up with surprise (AU5, AU2), flattened by anger and disgust
    (AU4, AU9) and by sadness (AU1 without AU2); ear_tilt = AU2 L - R (signed); blinks per side,
    half-closed by a contented squint (AU7, AU6); pupils dilate with fear/surprise (AU5, AU1)
    and narrow to slits with anger (AU4, AU7); brows = AU1+AU2 (+) against AU4 (-); snarl from
    AU9, AU10 and a bared-teeth AU20; jaw_open = AU26 (or AU25); jaw_side = AU30 L - R;
    mouth_curve = AU12 - AU15; whiskers fan up with a smile or puffed cheeks (AU6, AU12, AU34,
    AU18) and droop with sadness (AU15, AU17)."""
    outer = 0.5 * (a["brow_outer_raise_L"] + a["brow_outer_raise_R"])
    pull = 0.5 * (a["lip_corner_pull_L"] + a["lip_corner_pull_R"])
    depress = 0.5 * (a["lip_corner_depress_L"] + a["lip_corner_depress_R"])
    sad_brow = np.clip(a["brow_inner_raise"] - outer, 0, 1)
    squint = 0.4 * a["lid_tighten"] + 0.3 * a["cheek_raise"]
    return {
        "ears_perk": np.clip(
            0.7 * a["upper_lid_raise"]
            + 0.6 * outer
            - a["brow_lower"]
            - 0.6 * a["nose_wrinkle"]
            - 0.6 * sad_brow,
            -1,
            1,
        ),
        "ear_tilt": np.clip(a["brow_outer_raise_L"] - a["brow_outer_raise_R"], -1, 1),
        "blink_L": np.clip(np.maximum(a["blink_L"], squint), 0, 1),
        "blink_R": np.clip(np.maximum(a["blink_R"], squint), 0, 1),
        "pupils": np.clip(
            0.8 * a["upper_lid_raise"]
            + 0.4 * a["brow_inner_raise"]
            - 0.7 * a["brow_lower"]
            - 0.5 * a["lid_tighten"],
            -1,
            1,
        ),
        "brows": np.clip(0.6 * a["brow_inner_raise"] + 0.6 * outer - a["brow_lower"], -1, 1),
        "snarl": np.clip(
            a["nose_wrinkle"] + 0.6 * a["upper_lip_raise"] + 0.3 * a["lip_stretch"], 0, 1
        ),
        "jaw_open": np.clip(np.maximum(a["jaw_drop"], 0.5 * a["lips_part"]), 0, 1),
        "jaw_side": np.clip(a["jaw_sideways_L"] - a["jaw_sideways_R"], -1, 1),
        "mouth_curve": np.clip(pull - depress, -1, 1),
        "whiskers": np.clip(
            0.5 * a["cheek_raise"]
            + 0.4 * pull
            + 0.6 * a["cheek_puff"]
            + 0.3 * a["lip_pucker"]
            - 0.7 * depress
            - 0.3 * a["chin_raise"],
            -1,
            1,
        ),
    }


def _cat() -> BuiltinAvatar:
    return BuiltinAvatar(
        spec=RigSpec("cat", _CAT_CONTROLS),
        description="ginger cat head, 11 controls (ears, slit pupils, snarl, whiskers)",
        render_fn=_render_cat,
        expected_fn=_expected_cat,
    )


BUILTIN_AVATARS: dict[str, BuiltinAvatar] = {
    a.name: a for a in (_human(), _cartoon(), _robot(), _cat())
}


def get_avatar(name: str) -> BuiltinAvatar:
    """A built-in avatar by name; KeyError lists the known ones."""
    try:
        return BUILTIN_AVATARS[name]
    except KeyError:
        raise KeyError(
            f"unknown built-in avatar {name!r}; known: {', '.join(BUILTIN_AVATARS)}"
        ) from None
