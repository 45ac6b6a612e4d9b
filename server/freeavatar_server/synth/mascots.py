"""Mascots: non-human cartoon faces (critters, robots, blobs) that make the same expressions.

The encoder has to read an expression on a cat or a robot as it reads it on a person, or the
animator's consistency loss points away from the right rig (CHANGELOG.md, "what the shipped
embedding carries"). People and cel-shaded people alone did not teach that. Mascots are drawn
from simple shapes in any style: a round, square or squircle head of any colour, pointed,
round or antenna ears, an optional dark face plate with glowing features, dot, white or screen
eyes, optional brows, nose and blush. The action units move the features as they move a face
(brows up and down and tilted, lids opened, narrowed and closed, mouth corners pulled and
depressed, lips parted, pressed, puckered, stretched, the jaw dropped and moved sideways,
cheeks puffed), so the world's triplet labels hold for them.

The built-in avatars are NOT drawn here: their look and rig mapping stay unseen by the
encoder, as a studio's avatars would be. Left/right follows actors.py: `_L` is the actor's
left, the image's right (+x).
"""

from __future__ import annotations

import numpy as np
import torch

from freeavatar_server.synth.raster import col, cov, hash_uniform, hsv, over, par

_STYLE_DRAWS = 48


class _Style:
    """Per-mascot drawing parameters, a pure function of the identity id."""

    def __init__(self, ids: np.ndarray) -> None:
        h = hash_uniform(ids, salt=0xA5C0, n=_STYLE_DRAWS)
        c = iter(range(_STYLE_DRAWS))

        def U(lo: float, hi: float) -> np.ndarray:
            return lo + (hi - lo) * h[:, next(c)]

        self.head_w, self.head_h, self.head_p = U(0.58, 0.78), U(0.55, 0.76), U(2.0, 6.0)
        self.skin = hsv(U(0, 1), U(0.0, 0.85), U(0.45, 1.0))
        self.ears = np.floor(U(0, 4)).astype(int)  # 0 none, 1 pointed, 2 round, 3 antenna
        self.ear_size = U(0.6, 1.2)
        self.plate = U(0, 1) < 0.35  # a dark face plate with glowing features (robot-like)
        self.glow = hsv(U(0, 1), U(0.3, 0.9), U(0.8, 1.0))
        self.ink = np.where((U(0, 1) < 0.5)[:, None], 0.08, self.skin * 0.3)
        self.eye_kind = np.floor(U(0, 3)).astype(int)  # 0 dots, 1 white with pupil, 2 screen
        self.eye_dx, self.eye_y = U(0.2, 0.38), U(-0.18, 0.02)
        self.eye_w, self.eye_h = U(0.07, 0.15), U(0.06, 0.15)
        self.brows = U(0, 1) < 0.75
        self.brow_th, self.brow_len = U(0.02, 0.05), U(0.1, 0.2)
        self.mouth_y, self.mouth_w = U(0.22, 0.42), U(0.16, 0.36)
        self.lip_th = U(0.015, 0.04)
        self.mouth_rgb = hsv(U(0, 1), U(0.3, 0.8), U(0.15, 0.5))
        self.nose = U(0, 1) < 0.5
        self.nose_rgb = hsv(U(0, 1), U(0.2, 0.8), U(0.2, 0.9))
        self.blush = U(0, 1) < 0.4
        self.inked = U(0, 1) < 0.6  # outlined and flat-shaded, as cartoons are drawn


def paint_mascots(
    gx: torch.Tensor,
    gy: torch.Tensor,
    background: torch.Tensor,
    ids: np.ndarray,
    muscles: dict[str, np.ndarray],
    placement: dict[str, np.ndarray],
    pixel: float,
) -> tuple[torch.Tensor, np.ndarray]:
    """Paint mascot faces over `background` (B,3,H,W) on the grid gx (1,1,W), gy (1,H,1).

    `muscles` is actors.au_to_muscles plus gaze; `placement` holds per-sample hx, hy, scale,
    yaw, pitch, roll (degrees), light_dir (B,3), ambient, diffuse. Returns the image and which
    samples want ink outlines (the caller cel-shades those)."""
    s = _Style(ids)
    b = len(ids)

    def P(v: np.ndarray | float) -> torch.Tensor:
        return par(v, b)

    m = {k: P(v) for k, v in muscles.items()}
    scale = placement["scale"]
    roll, yaw, pitch = (np.radians(placement[k]) for k in ("roll", "yaw", "pitch"))
    cr, sr = P(np.cos(roll)), P(np.sin(roll))
    dx, dy = gx - P(placement["hx"]), gy - P(placement["hy"])
    x = (cr * dx + sr * dy) / P(scale)
    y = (cr * dy - sr * dx) / P(scale)
    soft = P(1.5 * pixel / scale)
    # a flat face on a turning head: features slide with yaw and pitch, the far side narrows
    fx = (x - P(0.25 * np.sin(yaw))) / P(np.cos(yaw) ** 0.5)
    fy = y - P(0.18 * np.sin(pitch))
    fg = background.clone()
    fa = torch.zeros(b, *fg.shape[2:])

    def ellipse(cx, cy, rx, ry):
        return 1.0 - ((fx - cx).abs() / rx) ** 2.0 - ((fy - cy).abs() / ry) ** 2.0

    # head, widened low by a cheek puff and lengthened by a dropped jaw
    puff, jaw = m["cheek_puff"], m["jaw_open"]
    low = (y > 0).float()
    hw = P(s.head_w) * (1 + 0.12 * puff * low)
    hh = P(s.head_h) * (1 + 0.1 * jaw * low)
    head_d = 1.0 - (x.abs() / hw) ** P(s.head_p) - (y.abs() / hh) ** P(s.head_p)
    ears = _ears(s, x, y, P, soft)
    ear_rgb = col(s.skin * 0.85)
    over(fg, fa, ear_rgb, ears)
    light = _shade(x / hw, y / hh, placement, P)
    over(fg, fa, col(s.skin) * light.unsqueeze(1), cov(head_d * 0.25, soft))
    plate = P(s.plate.astype(float))
    plate_d = 1.0 - (fx.abs() / (0.72 * hw)) ** 6 - ((fy + 0.05) / (0.6 * hh)).abs() ** 6
    over(fg, fa, col(np.full((b, 3), 0.07)), cov(plate_d * 0.2, soft) * plate)
    feature = col(s.ink) * (1 - plate.unsqueeze(1)) + col(s.glow) * plate.unsqueeze(1)

    if s.blush.any():  # blush rises with the cheeks and grows with a puff
        for side in (-1.0, 1.0):
            d = ellipse(side * (P(s.eye_dx) + 0.08), P(s.eye_y) + 0.22 - 0.06 * m["cheek_L"], 0.09 * (1 + 0.5 * puff), 0.05 * (1 + 0.5 * puff))
            over(fg, fa, col(np.clip(s.skin * 0.6 + np.array([0.4, 0.05, 0.1]), 0, 1)), cov(d * 0.05, soft) * P(s.blush * 0.7) * (1 - plate))
    _eyes(s, fg, fa, fx, fy, m, feature, P, soft)
    _brows(s, fg, fa, fx, fy, m, feature, P, soft)
    if s.nose.any():  # the nose rides up on a wrinkle, which also draws two creases
        wrinkle = m["sneer_L"]
        d = ellipse(0.0, 0.12 - 0.03 * wrinkle, 0.05, 0.035)
        over(fg, fa, col(s.nose_rgb) * (1 - plate.unsqueeze(1)) + col(s.glow) * plate.unsqueeze(1), cov(d * 0.05, soft) * P(s.nose.astype(float)))
    for side in (-1.0, 1.0):  # wrinkle creases between the eyes
        d = _segment(fx, fy, side * 0.035, -0.02, side * 0.09, 0.05, 0.014)
        over(fg, fa, feature, cov(d, soft) * m["sneer_L"].clamp(0, 1))
    _mouth(s, fg, fa, fx, fy, m, feature, P, soft)
    return fg, s.inked


def _shade(u: torch.Tensor, v: torch.Tensor, placement: dict[str, np.ndarray], P) -> torch.Tensor:
    """Lambert light on a ball-shaped head."""
    ld = torch.as_tensor(placement["light_dir"], dtype=torch.float32)
    r2 = (u * u + v * v).clamp(max=1.0)
    nd = u * ld[:, 0, None, None] + v * ld[:, 1, None, None] + (1.0 - r2).sqrt() * ld[:, 2, None, None]
    return P(placement["ambient"]) + P(placement["diffuse"]) * nd.clamp(min=0.0)


def _segment(x, y, x0, y0, x1, y1, width):
    """Signed distance (positive inside) of a stroke of `width` from (x0, y0) to (x1, y1)."""
    vx, vy = x1 - x0, y1 - y0
    t = (((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy + 1e-9)).clamp(0, 1)
    return width / 2 - ((x - x0 - t * vx) ** 2 + (y - y0 - t * vy) ** 2).sqrt()


def _triangle(x, y, corners):
    """Signed distance-like field (positive inside) of a triangle, corners in either order."""
    sides = []
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True):
        ex, ey = bx - ax, by - ay
        sides.append(((x - ax) * ey - (y - ay) * ex) / (ex * ex + ey * ey) ** 0.5)
    inward = torch.minimum(torch.minimum(sides[0], sides[1]), sides[2])
    outward = torch.minimum(torch.minimum(-sides[0], -sides[1]), -sides[2])
    return torch.maximum(inward, outward)


def _ears(s: _Style, x, y, P, soft) -> torch.Tensor:
    """Coverage of the ears behind the head: pointed (a critter), round (a bear), or one
    antenna with a ball (a robot)."""
    a = torch.zeros_like(x)
    kind = torch.as_tensor(s.ears).reshape(-1, 1, 1)
    size = P(s.ear_size)
    for side in (-1.0, 1.0):
        ex, ey = side * P(s.head_w) * 0.72, -P(s.head_h) * 0.85
        lx, ly = (x - ex) / size, (y - ey) / size
        pointed = _triangle(lx, ly, [(-0.17, 0.12), (0.17, 0.12), (0.08 * side, -0.36)])
        rnd = (1.0 - (lx / 0.17) ** 2 - (ly / 0.17) ** 2) * 0.08
        antenna = torch.maximum(_segment(lx, ly, 0.0, 0.1, -0.1 * side, -0.3, 0.03),
                                0.05 - ((lx + 0.1 * side) ** 2 + (ly + 0.33) ** 2).sqrt())
        antenna = antenna if side > 0 else torch.full_like(x, -1.0)
        d = torch.where(kind == 1, pointed, torch.where(kind == 2, rnd, torch.where(kind == 3, antenna, torch.full_like(x, -1.0))))
        a = torch.maximum(a, cov(d, soft))
    return a


def _eyes(s: _Style, fg, fa, fx, fy, m, feature, P, soft) -> None:
    """Eyes open wider with a lid raise, narrow from below with the cheeks and a tightened lid,
    close with a blink; pupils follow the gaze."""
    kind = torch.as_tensor(s.eye_kind).reshape(-1, 1, 1)
    for side, sd in ((1.0, "L"), (-1.0, "R")):
        cx, cy = side * P(s.eye_dx), P(s.eye_y)
        rx, ry = P(s.eye_w), P(s.eye_h)
        open_top = (1 + 0.45 * m[f"lid_raise_{sd}"] - 0.25 * m[f"lid_tight_{sd}"]) * (1 - m[f"blink_{sd}"])
        open_bottom = (1 - 0.4 * m[f"cheek_{sd}"] - 0.35 * m[f"lid_tight_{sd}"]) * (1 - 0.9 * m[f"blink_{sd}"])
        top, bottom = cy - ry * open_top, cy + ry * open_bottom.clamp(min=0.05)
        shape = torch.where(kind == 2, 6.0, 2.0)
        d = 1.0 - ((fx - cx).abs() / rx) ** shape - ((fy - cy).abs() / (ry * (1 + 0.45 * m[f"lid_raise_{sd}"]))) ** shape
        lids = torch.minimum(fy - top, bottom - fy)
        inside = cov(torch.minimum(d * 0.1, lids), soft)
        white = (kind == 1).float()
        glow_screen = (kind == 2).float()
        dots = (kind == 0).float()
        over(fg, fa, col(np.full((len(s.head_w), 3), 0.97)), inside * white)
        over(fg, fa, feature, inside * (dots + glow_screen))
        px, py = cx + 0.35 * rx * m[f"gaze_x_{sd}"], cy + 0.3 * ry * m[f"gaze_y_{sd}"]
        pupil = 1.0 - ((fx - px) / (0.5 * rx)) ** 2 - ((fy - py) / (0.5 * rx)) ** 2
        over(fg, fa, col(np.full((len(s.head_w), 3), 0.05)), cov(torch.minimum(pupil * 0.05, lids), soft) * white)
        # a closed or nearly closed eye still shows as a lid line
        line = 0.012 - (fy - bottom).abs()
        closing = (1 - open_top - open_bottom + 1).clamp(0, 1) * (d > -0.5).float()  # lids meeting
        over(fg, fa, feature, cov(line, soft) * closing)


def _brows(s: _Style, fg, fa, fx, fy, m, feature, P, soft) -> None:
    """A bar per eye: inner end raised by AU1, outer by AU2 of its side, both lowered (and the
    inner ends pulled down, the angry V) by AU4."""
    present = P(s.brows.astype(float))
    for side, sd in ((1.0, "L"), (-1.0, "R")):
        cx = side * P(s.eye_dx)
        base = P(s.eye_y) - P(s.eye_h) - 0.08 - 0.03 * m[f"lid_raise_{sd}"]
        inner = base - 0.09 * m[f"brow_inner_up_{sd}"] + 0.07 * m[f"brow_down_{sd}"]
        outer = base - 0.09 * m[f"brow_outer_up_{sd}"] + 0.02 * m[f"brow_down_{sd}"]
        half = P(s.brow_len)
        t = ((fx - cx) * side / half).clamp(-1, 1)  # -1 inner end, +1 outer end
        centre = inner + (outer - inner) * (t + 1) / 2
        along = half - (fx - cx).abs()
        d = torch.minimum(P(s.brow_th) / 2 - (fy - centre).abs(), along)
        over(fg, fa, feature, cov(d, soft) * present)


def _mouth(s: _Style, fg, fa, fx, fy, m, feature, P, soft) -> None:
    """Between an upper and a lower lip curve: corners up with a pull, down with a depressor,
    wider with a stretch, narrower and rounder with a pucker, thinner with a press; the opening
    grows with parted lips, a raised upper lip and a dropped jaw; the chin raise pushes the
    lower lip up; the jaw moves it sideways."""
    pull_l, pull_r = m["corner_pull_L"], m["corner_pull_R"]
    dep_l, dep_r = m["corner_depress_L"], m["corner_depress_R"]
    pucker, press, stretch = m["pucker"], m["press_L"], m["stretch_L"]
    half = P(s.mouth_w) * (1 + 0.35 * stretch + 0.15 * (pull_l + pull_r) / 2 - 0.45 * pucker - 0.15 * press - 0.08 * m["dimple_L"])
    cx = 0.07 * m["jaw_side"]
    cy = P(s.mouth_y) + 0.06 * m["jaw_open"]
    t = ((fx - cx) / half).clamp(-1, 1)
    corner = torch.where(t > 0, -0.1 * pull_l + 0.08 * dep_l, -0.1 * pull_r + 0.08 * dep_r) + 0.02 * m["dimple_L"]
    bend = t * t
    gap = 0.22 * m["jaw_open"] + 0.06 * m["lips_part"] + 0.03 * m["upper_lip_up_L"]
    round_ = 1 + 1.5 * pucker
    upper = cy + corner * bend - (gap * 0.35 + 0.04 * m["upper_lip_up_L"]) * (1 - bend) * round_
    lower = cy + corner * bend + gap * (1 - bend ** (1 + pucker)) - 0.03 * m["chin_raise"] * (1 - bend)
    along = half - (fx - cx).abs()
    opening = torch.minimum(torch.minimum(fy - upper, lower - fy), along)
    over(fg, fa, col(s.mouth_rgb), cov(opening, soft))
    th = P(s.lip_th) * (1 - 0.5 * press) * (1 + 0.6 * pucker)
    for curve in (upper, lower):
        d = torch.minimum(th / 2 - (fy - curve).abs(), along + th / 2)
        over(fg, fa, feature, cov(d, soft))
    chin = torch.minimum(0.008 - (fy - (cy + 0.12 + gap - 0.03 * m["chin_raise"])).abs(), 0.06 - (fx - cx).abs())
    over(fg, fa, feature, cov(chin, soft) * m["chin_raise"])
