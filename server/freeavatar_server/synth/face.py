"""The 2.5D parametric face painter shared by synthetic actors and the ARKit avatar.

A face is painted on a coordinate grid in three frames:

* grid units: the caller's pixels mapped to floats (crop: [-1, 1] across the image);
* view units: head-centred, roll undone, scaled by the head radii (rx, ry);
* canonical face units (u, v): the view point lifted onto a unit sphere and rotated back by yaw
  and pitch, so features painted at fixed (u, v) slide, foreshorten and hide the way features
  on a turning head do. u > 0 is the actor's LEFT (image right: the camera is not mirrored),
  v grows downwards; eyes sit near v = 0, the mouth near v = 0.55, the chin at v = 1.

Expression enters as "muscle" parameters (MUSCLES), a per-side superset of FACS action units and
ARKit blendshapes; actors.py and avatars.py map their own controls onto them. Muscles are coupled
the way a face is: a lip-corner pull lifts the cheek, which pushes the lower lid up; a jaw drop
lowers the chin and lengthens the silhouette; brow raises wrinkle the forehead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from freeavatar_server.synth.raster import col, cov, over, par

SIDED = (
    "brow_inner_up", "brow_outer_up", "brow_down", "lid_raise", "lid_tight", "blink",
    "cheek", "sneer", "upper_lip_up", "corner_pull", "corner_depress", "dimple", "stretch",
    "lower_lip_down", "press", "gaze_x", "gaze_y",
)  # fmt: skip
CENTRAL = (
    "chin_raise", "pucker", "funnel", "lips_part", "jaw_open", "jaw_side", "jaw_forward",
    "mouth_side", "mouth_close", "roll_lower", "roll_upper", "shrug_upper", "cheek_puff",
    "tongue_out",
)  # fmt: skip
# Every muscle the painter reads. Sided ones come as name_L / name_R. gaze_*, jaw_side and
# mouth_side are signed (image +u / +v direction); the rest live in [0, 1].
MUSCLES: tuple[str, ...] = tuple(f"{m}_{s}" for m in SIDED for s in "LR") + CENTRAL


@dataclass(frozen=True)
class Identity:
    """Per-sample identity parameters as numpy arrays of length B (colours are (B, 3) in [0,1])."""

    head_w: np.ndarray  # head half-width relative to the standard crop framing
    head_h: np.ndarray
    shape_p: np.ndarray  # superellipse exponent: 2 = oval, larger = squarer
    jaw_w: np.ndarray  # lower-face width factor (narrow chin < 1)
    eye_dx: np.ndarray
    eye_y: np.ndarray
    eye_w: np.ndarray
    eye_h: np.ndarray
    eye_tilt: np.ndarray
    iris_r: np.ndarray
    brow_y: np.ndarray
    brow_in: np.ndarray
    brow_out: np.ndarray
    brow_th: np.ndarray
    brow_arch: np.ndarray
    nose_y: np.ndarray
    nose_w: np.ndarray
    mouth_y: np.ndarray
    mouth_w: np.ndarray
    lip_up: np.ndarray
    lip_lo: np.ndarray
    ear_size: np.ndarray
    hairline: np.ndarray  # canonical v of the hairline; < -1 means bald
    hair_part: np.ndarray  # side-part skew of the fringe
    hair_volume: np.ndarray  # 0 none, ~1 short cap
    hair_long: np.ndarray  # 0/1 long hair falling behind the neck
    beard: np.ndarray  # 0 none .. 1 full
    mustache: np.ndarray  # 0/1
    glasses: np.ndarray  # 0/1
    wrinkles: np.ndarray  # resting fold depth (age)
    skin: np.ndarray
    lip_rgb: np.ndarray
    iris_rgb: np.ndarray
    hair_rgb: np.ndarray
    brow_rgb: np.ndarray
    shirt_rgb: np.ndarray
    frame_rgb: np.ndarray

    @property
    def batch(self) -> int:
        return len(self.head_w)


@dataclass(frozen=True)
class Scene:
    """Per-sample placement and light. Positions in grid units; angles in degrees."""

    hx: np.ndarray
    hy: np.ndarray
    scale: np.ndarray  # multiplies the identity's head radii
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    pixel: np.ndarray  # size of one output pixel in grid units (anti-aliasing width)
    light_dir: np.ndarray  # (B, 3) unit vectors, view space (x right, y down, z to camera)
    light_rgb: np.ndarray  # (B, 3)
    ambient: np.ndarray
    diffuse: np.ndarray


def head_radii(ident: Identity, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Head half-width and half-height in grid units."""
    return ident.head_w * scene.scale, ident.head_h * scene.scale


def jaw_drop_units(jaw_open: np.ndarray) -> np.ndarray:
    """How far (head units) the chin moves down for a given jaw opening."""
    return 0.24 * np.asarray(jaw_open)


# The face box spans forehead to chin and cheek to cheek, as a face detector would draw it,
# in head units of the (un-rolled) head: x in [-FACE_BOX_X, FACE_BOX_X], y from FACE_BOX_TOP to
# the chin at 1 (+ the jaw drop).
FACE_BOX_X = 0.92
FACE_BOX_TOP = -0.62


def face_box(ident: Identity, scene: Scene, jaw_open: np.ndarray) -> np.ndarray:
    """(B, 4) x0, y0, x1, y1 in grid units: bounds of the rolled forehead-to-chin ellipse."""
    rx, ry = head_radii(ident, scene)
    bottom = 1.0 + jaw_drop_units(jaw_open)
    half_x = FACE_BOX_X * rx
    half_y = (bottom - FACE_BOX_TOP) / 2.0 * ry
    off = (bottom + FACE_BOX_TOP) / 2.0 * ry  # box centre below the head centre
    r = np.radians(scene.roll)
    # rolling by +r maps the head's down axis (0, 1) to (-sin r, cos r) in the image
    cx = scene.hx - np.sin(r) * off
    cy = scene.hy + np.cos(r) * off
    half_w = np.sqrt((half_x * np.cos(r)) ** 2 + (half_y * np.sin(r)) ** 2)
    half_h = np.sqrt((half_x * np.sin(r)) ** 2 + (half_y * np.cos(r)) ** 2)
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


_MOUTH_INSIDE = torch.tensor([0.25, 0.07, 0.09]).reshape(1, 3, 1, 1)
_TEETH = torch.tensor([0.94, 0.92, 0.86]).reshape(1, 3, 1, 1)
_TONGUE = torch.tensor([0.85, 0.4, 0.42]).reshape(1, 3, 1, 1)
_LENS = torch.full((1, 3, 1, 1), 0.75)
_SCLERA = torch.tensor([0.93, 0.91, 0.88]).reshape(1, 3, 1, 1)


@dataclass
class _Ctx:
    """What one painter call shares: per-sample scalars (B,1,1) and per-pixel coordinates."""

    ident: Identity
    m: dict[str, torch.Tensor]  # muscles
    jaw_open: np.ndarray
    yaw: np.ndarray  # radians
    soft: torch.Tensor  # one output pixel, in head units
    rx: torch.Tensor
    ry: torch.Tensor
    dx: torch.Tensor  # grid offset from the head centre (un-rolled)
    dy: torch.Tensor
    xr: torch.Tensor  # view frame: roll undone, head units
    yr: torch.Tensor
    x: torch.Tensor  # view frame after the jaw warp
    y: torch.Tensor
    u: torch.Tensor  # canonical face coordinates (jaw-warped: chin, beard)
    v: torch.Tensor
    au: torch.Tensor  # |u|: features mirror across the midline
    side: torch.Tensor  # u > 0: the actor's left half
    u0: torch.Tensor  # canonical, un-warped (the mouth)
    v0: torch.Tensor
    js: torch.Tensor  # jaw sideways shift
    sy: torch.Tensor  # sin(yaw)

    @property
    def batch(self) -> int:
        return self.ident.batch

    def p(self, values: np.ndarray | float) -> torch.Tensor:
        return par(values, self.batch)

    def mus(self, name: str, side: str) -> torch.Tensor:
        return self.m[f"{name}_{side}"]

    @staticmethod
    def by_side(
        mask: torch.Tensor, fn: Callable[[str], tuple[torch.Tensor, ...]]
    ) -> list[torch.Tensor]:
        """Per-side terms: fn("L") where mask holds, fn("R") elsewhere.

        The terms are (B,1,1) scalars computed per side first, then selected once per pixel:
        full-resolution arithmetic is what costs time. Terms equal on both sides for every
        sample (symmetric expressions) are not broadcast at all.
        """
        left, right = fn("L"), fn("R")
        return [
            a if torch.equal(a, b) else torch.where(mask, a, b)
            for a, b in zip(left, right, strict=True)
        ]


@dataclass
class _Canvas:
    """The person layer being painted (premultiplied fg, alpha fa), plus skin marks: `dark`
    accumulates creases and shadows, `light` highlights; both are applied to the skin once."""

    fg: torch.Tensor
    fa: torch.Tensor
    dark: torch.Tensor | float = 0.0
    light: torch.Tensor | float = 0.0

    def over(self, color: torch.Tensor, alpha: torch.Tensor) -> None:
        self.fg, self.fa = over(self.fg, self.fa, color, alpha)


@dataclass
class _Mouth:
    """Mouth outline (canonical un-warped units) that later layers (the beard) avoid."""

    outer_top: torch.Tensor
    outer_bottom: torch.Tensor
    half_width_dist: torch.Tensor  # |u0 - mouth centre|


def paint(
    gx: torch.Tensor,
    gy: torch.Tensor,
    background: torch.Tensor,
    ident: Identity,
    scene: Scene,
    muscles: dict[str, np.ndarray],
) -> torch.Tensor:
    """Paint B faces over `background` (B,3,H,W) in [0,1]; gx (B|1,1,W), gy (B|1,H,1) grid units.

    Returns (B,3,H,W) float32 in [0,1]. Layers no sample of the batch has (long hair, beard,
    glasses, tongue) are skipped: the pixels are the same, the time is not.
    """
    c = _coordinates(gx, gy, ident, scene, muscles)
    canvas = _Canvas(fg=torch.zeros_like(background), fa=torch.zeros_like(background[:, 0]))
    _paint_behind_head(c, canvas)
    head_a = _paint_head(c, canvas)
    cheek = _paint_eyes(c, canvas)
    brow_a = _brows(c, canvas)
    tip, nose_w = _paint_nose(c, canvas)
    mouth = _paint_mouth(c, canvas, tip, nose_w, cheek)
    _apply_skin_marks(canvas, head_a)
    canvas.over(col(ident.brow_rgb), brow_a)
    if ident.beard.any():
        _paint_beard(c, canvas, head_a, tip, mouth)
    if (ident.hairline > -1.05).any():
        _paint_hair_front(c, canvas, head_a)
    if ident.glasses.any():
        _paint_glasses(c, canvas, head_a)
    _light(c, canvas, scene)
    return torch.addcmul(canvas.fg, background, (1.0 - canvas.fa).unsqueeze(1))


def _coordinates(
    gx: torch.Tensor,
    gy: torch.Tensor,
    ident: Identity,
    scene: Scene,
    muscles: dict[str, np.ndarray],
) -> _Ctx:
    b = ident.batch

    def P(values: np.ndarray | float) -> torch.Tensor:
        return par(values, b)

    rx_np, ry_np = head_radii(ident, scene)
    rx, ry = P(rx_np), P(ry_np)
    # view frame: undo roll, normalise by the head radii
    roll, yaw, pitch = (np.radians(a) for a in (scene.roll, scene.yaw, scene.pitch))
    cr, sr = P(np.cos(roll)), P(np.sin(roll))
    dx, dy = gx - P(scene.hx), gy - P(scene.hy)
    xr = (cr * dx + sr * dy) / rx
    yr = (cr * dy - sr * dx) / ry
    # the jaw: everything below the mouth line follows the chin down / sideways
    cp_np, sp_np = np.cos(pitch), np.sin(pitch)
    mouth_view_y = ident.mouth_y * cp_np - np.sqrt(1 - ident.mouth_y**2) * sp_np
    jd = P(jaw_drop_units(muscles["jaw_open"]) + 0.05 * np.asarray(muscles["jaw_forward"]))
    js = P(0.16 * np.asarray(muscles["jaw_side"]))
    ramp = ((yr - P(mouth_view_y + 0.02)) / 0.16).clamp_(0.0, 1.0)
    x = xr - js * ramp
    y = yr - jd * ramp
    # lift onto the unit sphere and rotate back by pitch and yaw: canonical face coordinates
    z = (1.0 - x * x - y * y).clamp_(min=0.0).sqrt_()
    cp, sp, cy, sy = P(cp_np), P(sp_np), P(np.cos(yaw)), P(np.sin(yaw))
    v = y * cp + z * sp
    z1 = z * cp - y * sp
    u = x * cy - z1 * sy
    return _Ctx(
        ident=ident,
        m={k: P(muscles[k]) for k in MUSCLES},
        jaw_open=np.asarray(muscles["jaw_open"]),
        yaw=yaw,
        soft=P(scene.pixel / rx_np * 1.2),
        rx=rx,
        ry=ry,
        dx=dx,
        dy=dy,
        xr=xr,
        yr=yr,
        x=x,
        y=y,
        u=u,
        v=v,
        au=u.abs(),
        side=u > 0,
        # the mouth is drawn un-warped, with an explicit opening that matches the jaw drop
        u0=u + js * ramp,
        v0=v + jd * ramp * cp,
        js=js,
        sy=sy,
    )


def _paint_behind_head(c: _Ctx, canvas: _Canvas) -> None:
    """Hair volume and long hair, neck, torso and ears: everything the head overlaps."""
    ident, soft, xr, yr, P = c.ident, c.soft, c.xr, c.yr, c.p
    hair, skin = col(ident.hair_rgb), col(ident.skin)
    cx_, cy_ = xr / 1.08, (yr + 0.05) / 1.1
    hair_a = (
        cov((1.0 - cx_ * cx_ - cy_ * cy_) * 0.5, soft) * cov(0.1 - yr, soft) * P(ident.hair_volume)
    )
    if ident.hair_long.any():
        lx, ly = (xr / 1.25).abs(), ((yr - 0.2) / 1.35).abs()
        long_a = (
            cov(1.0 - lx * lx * lx - ly * ly * ly, soft) * cov(1.25 - yr, soft) * P(ident.hair_long)
        )
        hair_a = torch.maximum(long_a, hair_a)
    canvas.over(hair, hair_a)
    canvas.over(
        skin * 0.82, cov(0.34 + 0.08 * yr.clamp(0.3, 1.5) - xr.abs(), soft) * cov(yr - 0.3, soft)
    )
    # the torso does not roll with the head: it is laid out in un-rolled image axes
    xb, yb = c.dx / c.rx, c.dy / c.ry
    sh = (xb.abs() - 0.9).clamp(min=0.0)  # flat across the chest, falling at the shoulders
    shirt_d = yb - (1.32 + 0.05 * xb * xb + 0.6 * sh * sh)
    canvas.over(col(ident.shirt_rgb), cov(shirt_d, soft) * cov(2.3 - xb.abs(), soft))
    # ears sit at the sphere's edge; the one turned away from the camera hides behind the head
    sin_yaw = np.sin(c.yaw)
    ear_x = torch.where(xr > 0, P(np.cos(c.yaw) + 0.03 - 0.3 * np.clip(sin_yaw, 0, None)),
                        P(np.cos(c.yaw) + 0.03 - 0.3 * np.clip(-sin_yaw, 0, None)))  # fmt: skip
    es = P(ident.ear_size)
    ex_, ey_ = (xr.abs() - ear_x) / (0.13 * es), (yr - 0.08) / (0.22 * es)
    canvas.over(skin * 0.9, cov((1.0 - ex_ * ex_ - ey_ * ey_) * 0.1, soft))


def _paint_head(c: _Ctx, canvas: _Canvas) -> torch.Tensor:
    """Head silhouette: superellipse, tapered jaw, chin following yaw, puffed cheeks."""
    ident, x, y = c.ident, c.x, c.y
    yl = y.clamp(min=0.0)
    xs = x - 0.12 * c.sy * yl
    puff = c.m["cheek_puff"] * 0.12 * (1.0 - (y - 0.35).abs() * 2).clamp(min=0.0)
    sx = 1.0 + (c.p(ident.jaw_w) - 1.0) * yl * yl + puff
    p = c.p(ident.shape_p)
    # superellipse level f = |x|^p + |y|^p; near the outline the distance is ~ (1 - f) / p
    f_sil = (xs / sx).abs() ** p + y.abs() ** p
    head_a = cov((1.0 - f_sil) / p, c.soft)
    canvas.over(col(ident.skin), head_a)
    return head_a


def _cheek_push(c: _Ctx, s: str) -> torch.Tensor:
    """How far the cheek rises on side s: AU6, plus a smile's and a sneer's push, plus puffing."""
    m = c.m
    return (c.mus("cheek", s) + 0.35 * c.mus("corner_pull", s) + 0.3 * c.mus("sneer", s)
            + 0.5 * m["cheek_puff"]).clamp(max=1.0)  # fmt: skip


def _paint_eyes(c: _Ctx, canvas: _Canvas) -> torch.Tensor:
    """Lids (raise, tighten, blink, pushed up by the cheek), iris and pupil with gaze, lash
    line, lid crease, crow's feet. Returns the per-pixel cheek push for later layers."""
    ident, soft, v, au, P, M = c.ident, c.soft, c.v, c.au, c.p, c.mus
    ew, eh = P(ident.eye_w), P(ident.eye_h)

    def eye_terms(s: str) -> tuple[torch.Tensor, ...]:
        cheek = _cheek_push(c, s)
        brow_up = 0.5 * (M("brow_inner_up", s) + M("brow_outer_up", s))
        tight = M("lid_tight", s)
        lo = eh * 0.55 * (1.0 - 0.45 * tight - 0.45 * cheek)
        up = eh * (1.0 + 0.8 * M("lid_raise", s) + 0.2 * brow_up - 0.35 * tight - 0.2 * cheek
                   - 0.3 * M("brow_down", s))  # fmt: skip
        total = (up + lo) * (1.0 - M("blink", s)) - lo
        gx_ = c.m["gaze_x_L"] if s == "L" else -c.m["gaze_x_R"]  # mirrored: +|u| is outwards
        return cheek, lo, total, gx_, M("gaze_y", s)

    cheek_s, open_lo, up_total, gaze_x, gaze_y = c.by_side(c.side, eye_terms)
    lu = (au - P(ident.eye_dx)) / ew
    q = (1.0 - lu * lu).clamp_(min=0.0)
    qs = q.sqrt()
    ey = P(ident.eye_y) - P(ident.eye_tilt) * lu
    v_up = ey - up_total * qs
    v_lo = ey + open_lo * qs
    ends = (q * 12.0).clamp_(max=1.0)
    eye_a = cov(torch.minimum(v - v_up, v_lo - v), soft) * ends
    ir = P(ident.iris_r)
    ddx = au - P(ident.eye_dx) - 0.05 * gaze_x
    ddy = v - P(ident.eye_y) - 0.03 * gaze_y
    d_iris = (ddx * ddx + ddy * ddy).sqrt_()
    iris_a = cov(ir - d_iris, soft).unsqueeze(1)
    eye_rgb = torch.lerp(_SCLERA.expand(c.batch, 3, 1, 1), col(ident.iris_rgb), iris_a)
    eye_rgb = eye_rgb * (1.0 - 0.92 * cov(ir * 0.45 - d_iris, soft)).unsqueeze(1)
    canvas.over(eye_rgb, eye_a)
    lash = cov(0.016 - (v - v_up).abs(), soft) * ends
    crease = cov(0.007 - (v - (v_up - 0.045 * qs - 0.015)).abs(), soft) * ends
    canvas.dark = canvas.dark + 0.8 * lash + 0.25 * crease
    # crow's feet: a smile's cheek push folds the skin at the outer corners
    cf = (1.0 - (lu - 1.25).abs() / 0.22).clamp_(min=0.0) * (1.0 - (v - ey).abs() / 0.09).clamp_(
        min=0.0
    )
    canvas.dark += 0.45 * cheek_s * cf * (0.5 + 0.5 * torch.cos(v * 130.0)).square_()
    return cheek_s


def _brows(c: _Ctx, canvas: _Canvas) -> torch.Tensor:
    """Brow alpha (composited after the skin marks) and the forehead folds / frown lines.

    The brow centre line is v = k0 + k1 t + k2 t^2 along t in [0, 1] from inner to outer end.
    """
    ident, soft, v, au, P, M = c.ident, c.soft, c.v, c.au, c.p, c.mus
    arch, by_ = P(ident.brow_arch), P(ident.brow_y)

    def brow_terms(s: str) -> tuple[torch.Tensor, ...]:
        a = 0.13 * M("brow_inner_up", s)
        bo = 0.14 * M("brow_outer_up", s)
        d = 0.085 * M("brow_down", s)
        k0 = by_ - a + d - 0.02 * M("lid_raise", s)
        k1 = -4.0 * arch + 2.0 * a - bo - 0.6 * d
        k2 = 4.0 * arch - a
        b_in = P(ident.brow_in) - 0.035 * M("brow_down", s)  # frowning pulls brows together
        fold = 0.6 * M("brow_inner_up", s) + 0.5 * M("brow_outer_up", s)
        return k0, k1, k2, b_in, fold, M("brow_down", s)

    k0, k1, k2, b_in, raise_s, b_down = c.by_side(c.side, brow_terms)
    b_out = P(ident.brow_out)
    t = (au - b_in) / (b_out - b_in)
    tc = t.clamp(0.0, 1.0)
    vb = k0 + tc * (k1 + tc * k2)
    th = P(ident.brow_th) * (1.15 - 0.5 * tc)
    brow_a = cov(th - (v - vb).abs(), soft) * cov(torch.minimum(t, 1.0 - t) * (b_out - b_in), soft)
    # forehead folds rise with the brows; the frown line appears between lowered brows
    fh = (1.0 - au / 0.55).clamp_(min=0.0) * cov(torch.minimum(v - by_ + 0.42, by_ - 0.1 - v), soft)
    fold = (0.5 + 0.5 * torch.cos((v - by_) * (2 * math.pi / 0.075))).square_().square_()
    canvas.dark += (raise_s * 0.4 + P(ident.wrinkles) * 0.1) * fh * fold
    glab = (1.0 - (au - 0.05).abs() / 0.014).clamp_(min=0.0) * cov(
        0.09 - (v - by_ - 0.02).abs(), soft
    )
    canvas.dark += 0.45 * b_down * glab
    return brow_a


def _paint_nose(c: _Ctx, canvas: _Canvas) -> tuple[torch.Tensor, torch.Tensor]:
    """Nostrils, tip shadow, bridge shading and sneer wrinkles. Returns (tip v, width)."""
    ident, soft, v, P, M = c.ident, c.soft, c.v, c.p, c.mus
    un = c.u - 0.16 * c.sy  # the tip stands proud of the sphere, so it swings further with yaw
    aun = un.abs()

    def nose_terms(s: str) -> tuple[torch.Tensor, ...]:
        sn = M("sneer", s)
        tip_ = P(ident.nose_y) - 0.025 * sn - 0.012 * M("upper_lip_up", s)
        return tip_, P(ident.nose_w) * (1.0 + 0.25 * sn), sn

    ntip, nw, sneer = c.by_side(un > 0, nose_terms)
    nx = (aun - nw * 0.5) / 0.042
    ny = (v - ntip - 0.03) / 0.02
    canvas.dark += 0.65 * ((1.0 - nx * nx - ny * ny) * 2.5).clamp_(0.0, 1.0)
    tx, ty = un / (nw * 0.95), (v - ntip) / 0.075
    tip = (tx * tx + ty * ty).sqrt_()
    canvas.dark += 0.16 * (1.0 - (tip - 1.0).abs() * 7.0).clamp_(min=0.0) * cov(v - ntip, soft)
    bridge = cov(torch.minimum(v - P(ident.eye_y) - 0.05, ntip - 0.04 - v), soft)
    canvas.dark += 0.14 * (1.0 - (aun - nw * 0.42).abs() / 0.025).clamp_(min=0.0) * bridge
    canvas.light = canvas.light + 0.12 * (1.0 - aun / 0.035).clamp_(min=0.0) * bridge
    wr = cov(0.09 - aun, soft) * cov(
        torch.minimum(v - P(ident.eye_y) - 0.02, P(ident.eye_y) + 0.17 - v), soft
    )
    canvas.dark += (
        0.4 * sneer * wr * (0.5 + 0.5 * torch.cos(v * (2 * math.pi / 0.04))).square_().square_()
    )
    return ntip, nw


def _paint_mouth(
    c: _Ctx, canvas: _Canvas, ntip: torch.Tensor, nw: torch.Tensor, cheek_s: torch.Tensor
) -> _Mouth:
    """Lips, opening, teeth, tongue; mouth line, corners, dimples, nasolabial folds, chin;
    cheek highlights. Drawn in un-warped coordinates: the opening itself tracks the jaw."""
    ident, m, soft, P, M = c.ident, c.m, c.soft, c.p, c.mus
    u, v, u0, v0 = c.u, c.v, c.u0, c.v0
    mcu = 0.05 * m["mouth_side"] + 0.5 * c.js
    du = u0 - mcu
    adu = du.abs()
    pucker, funnel = m["pucker"], m["funnel"]
    jaw_lo = P(jaw_drop_units(c.jaw_open)) * 0.85
    mv = P(ident.mouth_y) - 0.02 * m["chin_raise"] - 0.015 * m["shrug_upper"]

    def mouth_terms(s: str) -> tuple[torch.Tensor, ...]:
        pull, dep, st = M("corner_pull", s), M("corner_depress", s), M("stretch", s)
        dim, press = M("dimple", s), M("press", s)
        cw_ = P(ident.mouth_w) * (1.0 + 0.22 * pull + 0.35 * st + 0.12 * dim - 0.5 * pucker
                                  - 0.3 * funnel - 0.05 * dep + 0.1 * m["jaw_open"])  # fmt: skip
        cv_ = (P(ident.mouth_y) - 0.14 * pull + 0.11 * dep + 0.02 * st
               + 0.03 * m["chin_raise"] - 0.015 * dim)  # fmt: skip
        closed = (1.0 - press) * (1.0 - m["mouth_close"])
        press = press + 0.3 * m["mouth_close"]  # closing against the jaw also firms the lips
        up = (0.012 * m["lips_part"] + 0.06 * M("upper_lip_up", s) + 0.02 * m["jaw_open"]
              + 0.03 * funnel) * closed  # fmt: skip
        lo = ((0.025 * m["lips_part"] + jaw_lo + 0.05 * M("lower_lip_down", s) + 0.03 * funnel)
              * closed - 0.02 * m["chin_raise"]).clamp(min=0.0)  # fmt: skip
        ut_ = P(ident.lip_up) * (
            1.0 - 0.65 * press - 0.6 * m["roll_upper"] + 0.5 * pucker + 0.3 * funnel
        )
        lt_ = P(ident.lip_lo) * (1.0 - 0.65 * press - 0.6 * m["roll_lower"] + 0.5 * pucker
                                 + 0.3 * funnel + 0.3 * m["chin_raise"])  # fmt: skip
        fold_k = (0.06 + P(ident.wrinkles) * 0.15 + 0.45 * _cheek_push(c, s)
                  + 0.3 * M("upper_lip_up", s) + 0.2 * st)  # fmt: skip
        fold_w = P(ident.mouth_w) * (1.0 + 0.22 * pull + 0.3 * st)
        return (
            cw_,
            cv_,
            up,
            lo,
            ut_,
            lt_,
            0.3 + 0.4 * dim + 0.2 * dep,
            0.6 * dim,
            fold_k,
            fold_w,
            1.0 - press,
        )

    (cw, cv, open_up, open_lo, ut, lt, corner_k, dimple_k, fold_k, fold_w,
     unpressed) = c.by_side(du > 0, mouth_terms)  # fmt: skip
    tm = adu / cw
    tm2 = tm * tm
    qm = (1.0 - tm2).clamp_(min=0.0)
    sq = qm ** (0.5 - 0.2 * (pucker + funnel).clamp(max=1.0))  # puckered mouths are rounder
    line = mv + (cv - mv) * tm2.clamp(max=1.0)
    iu = line - open_up * sq
    il = line + open_lo * sq
    thick = qm.sqrt()
    cupid = 0.012 * (1.0 - adu / 0.05).clamp_(min=0.0)
    ou = iu - ut * thick - 0.004 + cupid
    ol = il + lt * thick + 0.004
    in_mouth = cov((1.0 - tm) * cw, soft)
    canvas.over(col(ident.lip_rgb), cov(torch.minimum(v0 - ou, ol - v0), soft) * in_mouth)
    gap_a = cov(torch.minimum(v0 - iu, il - v0), soft) * in_mouth
    canvas.over(_MOUTH_INSIDE, gap_a)
    teeth_a = gap_a * (cov(iu + 0.04 - v0, soft) + cov(v0 - il + 0.025, soft) * 0.8).clamp_(max=1.0)
    canvas.over(_TEETH, teeth_a * unpressed)
    if bool((m["tongue_out"] > 0).any()):
        tongue = m["tongue_out"]
        tgx, tgy = du / 0.09, (v0 - il - 0.03 * tongue) / (0.03 + 0.09 * tongue)
        tongue_a = cov((1.0 - tgx * tgx - tgy * tgy) * 0.05, soft) * cov(v0 - iu, soft)
        canvas.over(_TONGUE, tongue_a * (tongue * 5.0).clamp(max=1.0))
    canvas.dark += 0.8 * cov(0.008 - (v0 - line).abs(), soft) * in_mouth * (1.0 - gap_a)
    # corners, dimples, folds from nose to mouth, the crease under the lip and chin dimpling
    cx_, cy_ = (tm - 1.0) / 0.12, (v0 - cv) / 0.025
    canvas.dark += corner_k * (1.0 - cx_ * cx_ - cy_ * cy_).clamp_(min=0.0)
    dx_, dy_ = (adu - cw - 0.05) / 0.013, (v0 - cv) / 0.03
    canvas.dark += dimple_k * (1.0 - dx_ * dx_ - dy_ * dy_).clamp_(min=0.0)
    f_t = ((v0 - ntip) / (cv + 0.06 - ntip)).clamp(0.0, 1.0)
    f_u = nw * 0.6 + 0.04 + (fold_w + 0.01 - nw * 0.6) * f_t + 0.03 * torch.sin(f_t * math.pi)
    fold_a = cov(0.012 - (adu - f_u).abs(), soft) * cov(
        torch.minimum(v0 - ntip, cv + 0.06 - v0), soft
    )
    canvas.dark += fold_k * fold_a
    crease = ((1.0 - (v - P(ident.mouth_y) - 0.17).abs() / 0.02).clamp_(min=0.0)
              * (1.0 - (u - c.js).abs() / 0.14).clamp_(min=0.0))  # fmt: skip
    canvas.dark += (0.1 + 0.4 * m["chin_raise"]) * crease
    if bool((m["chin_raise"] > 0).any()):
        chx, chy = (u - c.js) / 0.2, (v - 0.84) / 0.1
        canvas.dark += (0.3 * m["chin_raise"] * (1.0 - chx * chx - chy * chy).clamp_(min=0.0)
                        * (0.5 + 0.5 * torch.sin(u * 90.0) * torch.sin(v * 90.0)))  # fmt: skip
    # cheeks bulge and catch the light when raised or puffed
    ckx = (c.au - 0.46) / 0.18
    cky = (v - 0.2 + 0.07 * cheek_s) / (0.13 + 0.05 * m["cheek_puff"])
    canvas.light += (0.04 + 0.14 * cheek_s + 0.12 * m["cheek_puff"]) * (
        1.0 - ckx * ckx - cky * cky
    ).clamp_(min=0.0)
    return _Mouth(outer_top=ou, outer_bottom=ol, half_width_dist=adu)


def _apply_skin_marks(canvas: _Canvas, head_a: torch.Tensor) -> None:
    """Darken creases and brighten highlights, on the head only."""
    shade_mod = (1.0 - torch.as_tensor(canvas.dark).clamp(0.0, 0.9)) * (1.0 + canvas.light)
    canvas.fg.mul_((1.0 - head_a * (1.0 - shade_mod)).unsqueeze(1))


def _paint_beard(
    c: _Ctx, canvas: _Canvas, head_a: torch.Tensor, ntip: torch.Tensor, mouth: _Mouth
) -> None:
    ident, soft, u, v, v0, P = c.ident, c.soft, c.u, c.v, c.v0, c.p
    around_lips = torch.maximum(mouth.outer_top - 0.02 - v0, v0 - mouth.outer_bottom - 0.02)
    zone = cov(v - ntip - 0.06, soft) * cov(around_lips, soft)
    zone = torch.maximum(
        zone * cov(v - P(ident.mouth_y) + 0.03, soft),
        zone * P(ident.mustache) * cov(0.3 - mouth.half_width_dist, soft),
    )
    texture = 0.75 + 0.25 * torch.sin(u * 170.0) * torch.sin(v * 150.0)
    canvas.over(col(ident.brow_rgb), zone * head_a * P(ident.beard) * texture)


def _paint_hair_front(c: _Ctx, canvas: _Canvas, head_a: torch.Tensor) -> None:
    """The fringe above the hairline, and sideburns in front of the ears."""
    ident, soft, u, v, P = c.ident, c.soft, c.u, c.v, c.p
    hl = P(ident.hairline) + 0.3 * u * u + P(ident.hair_part) * u
    # sideburns taper to a point in front of the ear instead of ending in a square block
    inner_edge = 0.86 + 0.5 * (v + 0.2).clamp(min=0.0)
    sideburn = cov(c.au - inner_edge, soft) * cov(v + 0.5, soft) * P(ident.hair_volume)
    front = torch.maximum(cov(hl - v, soft), sideburn)
    strands = 0.93 + 0.07 * torch.sin(u * 45.0 + v * 20.0)
    canvas.over(
        col(ident.hair_rgb) * strands.unsqueeze(1), front * head_a * (P(ident.hairline) > -1.05)
    )


def _paint_glasses(c: _Ctx, canvas: _Canvas, head_a: torch.Tensor) -> None:
    ident, soft, v, au, P = c.ident, c.soft, c.v, c.au, c.p
    gdx, gdy = (au - P(ident.eye_dx)) / 0.2, (v - P(ident.eye_y) - 0.01) / 0.14
    g_d = (gdx * gdx + gdy * gdy).sqrt_()
    rim = cov(0.014 - (g_d - 1.0).abs() * 0.17, soft)
    bridge = cov(0.012 - (v - P(ident.eye_y) + 0.03).abs(), soft) * cov(
        P(ident.eye_dx) - 0.18 - au, soft
    )
    canvas.over(_LENS, cov((1.0 - g_d) * 0.17, soft) * 0.12 * P(ident.glasses))
    canvas.over(col(ident.frame_rgb), torch.maximum(rim, bridge) * P(ident.glasses) * head_a)


def _light(c: _Ctx, canvas: _Canvas, scene: Scene) -> None:
    """Lambert shading on the head sphere (the sides of the head and the neck fall off)."""
    xr, yr = c.xr, c.yr
    ld = torch.as_tensor(scene.light_dir, dtype=torch.float32)
    r2 = xr * xr + yr * yr
    nd = (xr * ld[:, 0, None, None] + yr * ld[:, 1, None, None]
          + (1.0 - r2).clamp(min=0.0).sqrt() * ld[:, 2, None, None])  # fmt: skip
    nd = nd / r2.clamp(min=1.0).sqrt()
    shade = c.p(scene.ambient) + c.p(scene.diffuse) * nd.clamp(min=0.0)
    canvas.fg.mul_(shade.unsqueeze(1)).mul_(col(scene.light_rgb))
