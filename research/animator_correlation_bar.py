"""How well must an animator follow the actor before it can beat the neutral pose?

    .venv/bin/python research/animator_correlation_bar.py [--json] [--picture docs/animator_correlation_bar.png]

A DIAGNOSTIC with no model in it. The retargeting error (`freeavatar eval animator`) is a mean
over every control, most of which rest in any one expression, so a rig that moves in roughly the
right way can still score worse than one that never moves. For every built-in avatar this
script takes the held-out actors' ground-truth rigs, adds Gaussian noise to each control's
offset from rest (noise levels give predictors of known correlation with the truth, the
correlation `eval animator` reports), and then calibrates them as well as anything could: the
gain and the soft threshold towards rest with the lowest error, chosen with the truth itself.
The result is the lowest error reachable at each correlation when the errors are independent
noise, and where that crosses the neutral pose's error. A guide, not a bound: a predictor whose
errors have structure (one that leaves a control exactly at rest when unsure) can do somewhat
better at the same correlation, as the supervised ceiling in research/animator_ceiling.py does.
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path

import numpy as np

from freeavatar_server.synth.avatars import BUILTIN_AVATARS, BuiltinAvatar
from freeavatar_server.training.animator.data import HELDOUT_IDENTITY_OFFSET, actor_images
from freeavatar_server.training.animator.evaluate import (
    HELDOUT_SEED,
    retarget_correlation,
    retarget_error,
)
from freeavatar_server.training.animator.model import AvatarRig

NOISE_LEVELS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)  # x each control's own spread
GAINS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
THRESHOLDS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)  # in units of the control's range


def best_calibrated(noisy: np.ndarray, truth: np.ndarray, neutral: np.ndarray, rig: AvatarRig) -> float:
    """Lowest error over gains and soft thresholds of the noisy offsets (in units of range)."""
    span, best = rig.span, np.inf
    for gain in GAINS:
        for tau in THRESHOLDS:
            offset = np.sign(noisy) * np.maximum(np.abs(noisy) - tau, 0) * gain
            rigs = np.clip(neutral + offset * span, rig.minimum, rig.maximum)
            best = min(best, retarget_error(rigs, truth, rig))
    return float(best)


def correlation_bar(avatar: BuiltinAvatar, action_units: np.ndarray, seed: int = 0) -> dict[str, object]:
    rig = AvatarRig.from_spec(avatar.spec)
    span = rig.span
    truth = avatar.expected_rig(action_units)
    neutral = avatar.neutral(len(truth))
    offsets = (truth - neutral) / span
    spread = offsets.std(0, keepdims=True)
    rng = np.random.default_rng(seed)
    curve = []
    for level in NOISE_LEVELS:
        noisy = offsets + level * spread * rng.standard_normal(offsets.shape)
        curve.append({"noise": level, "correlation": retarget_correlation(neutral + noisy * span, truth),
                      "best_error": best_calibrated(noisy, truth, neutral, rig)})
    neutral_error = retarget_error(neutral, truth, rig)
    return {"neutral_error": neutral_error, "curve": curve, "correlation_to_tie_neutral": crossing(curve, neutral_error)}


def crossing(curve: list[dict[str, float]], level: float) -> float | None:
    """The correlation at which the best error rises through `level` (linear between points)."""
    points = sorted((c["correlation"], c["best_error"]) for c in curve)
    for (r0, e0), (r1, e1) in pairwise(points):
        if e0 >= level > e1:
            return r0 + (e0 - level) / (e0 - e1) * (r1 - r0)
    return None


def picture(report: dict[str, dict[str, object]], path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    from freeavatar_server.training.encoder.curves import Panel, draw_panel

    width, height = 1000, 640
    img = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    for i, (name, row) in enumerate(report.items()):
        curve = sorted((round(c["correlation"], 2), c["best_error"]) for c in row["curve"])
        flat = [(curve[0][0], row["neutral_error"]), (curve[-1][0], row["neutral_error"])]
        tie = row["correlation_to_tie_neutral"]
        title = f"{name}: lowest error by correlation r; ties the neutral pose at r {tie:.2f}"
        panel = Panel(title, {"calibrated noisy truth, at r max": curve, "neutral pose": flat}, x_label="r")
        r, c = divmod(i, 2)
        draw_panel(draw, (c * width // 2, r * height // 2, (c + 1) * width // 2, (r + 1) * height // 2), panel, font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    parser.add_argument("--picture", type=Path, help="write the curves as a PNG")
    args = parser.parse_args()
    # The held-out actors of `freeavatar eval animator` (their images are not needed: a small size).
    actors = actor_images(600, identity_offset=HELDOUT_IDENTITY_OFFSET, n_identities=60, seed=HELDOUT_SEED, size=32)
    report = {name: correlation_bar(avatar, actors.action_units) for name, avatar in BUILTIN_AVATARS.items()}
    if args.picture:
        picture(report, args.picture)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    for name, row in report.items():
        points = ", ".join(f"r {c['correlation']:.2f}: {c['best_error']:.4f}" for c in row["curve"])
        print(f"{name}: neutral {row['neutral_error']:.4f}; ties it at r {row['correlation_to_tie_neutral']:.2f}\n  {points}")


if __name__ == "__main__":
    main()
