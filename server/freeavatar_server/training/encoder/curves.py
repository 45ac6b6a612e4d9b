"""Training curves as a PNG, drawn with Pillow (no plotting library in the dependencies)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]


@dataclass
class Panel:
    title: str
    series: dict[str, list[tuple[float, float]]]  # label -> (x, y) points
    y_range: tuple[float, float] | None = None
    x_label: str = "step"


def read_history(run_dir: Path, stage: str) -> list[dict]:
    path = Path(run_dir) / f"history_{stage}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(hist: list[dict], key: str) -> list[tuple[float, float]]:
    return [(r["step"], r[key]) for r in hist if key in r]


def panels_for_run(run_dir: Path) -> list[Panel]:
    mae, trip, cls = (read_history(run_dir, s) for s in ("mae", "triplet", "classifier"))
    return [
        Panel("MAE pretraining: masked-patch loss", {"loss": _series(mae, "loss")}),
        Panel("Triplet tuning: symmetric triplet loss", {"loss": _series(trip, "loss")}),
        Panel(
            "Triplet accuracy",
            {"train batch": _series(trip, "train_acc"), "val all": _series(trip, "val_acc_all"),
             "val unambiguous": _series(trip, "val_acc_unamb")},
            (0.3, 1.0),
        ),  # fmt: skip
        Panel("Classifier baseline: cross-entropy", {"loss": _series(cls, "loss"), "train acc": _series(cls, "train_acc")}),
    ]


def draw_panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], panel: Panel, font) -> None:
    x0, y0, x1, y1 = box
    pl, pr, pt, pb = x0 + 48, x1 - 10, y0 + 24, y1 - 28
    draw.text((x0 + 8, y0 + 4), panel.title, fill="black", font=font)
    draw.rectangle((pl, pt, pr, pb), outline=(120, 120, 120))
    pts = [p for s in panel.series.values() for p in s]
    if not pts:
        draw.text((pl + 10, pt + 10), "no data", fill="gray", font=font)
        return
    xs_min, xs_max = min(p[0] for p in pts), max(p[0] for p in pts)
    lo, hi = panel.y_range or (min(p[1] for p in pts), max(p[1] for p in pts))
    hi = hi if hi > lo else lo + 1e-6
    xs_max = xs_max if xs_max > xs_min else xs_min + 1
    sx = lambda x: pl + (x - xs_min) / (xs_max - xs_min) * (pr - pl)  # noqa: E731
    sy = lambda y: pb - (min(max(y, lo), hi) - lo) / (hi - lo) * (pb - pt)  # noqa: E731
    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        draw.text((x0 + 2, sy(v) - 6), f"{v:.3g}", fill="black", font=font)
        draw.line((pl, sy(v), pr, sy(v)), fill=(225, 225, 225))
    draw.text((pl, pb + 6), f"{panel.x_label} {xs_min:g}", fill="black", font=font)
    draw.text((pr - 70, pb + 6), f"{panel.x_label} {xs_max:g}", fill="black", font=font)
    for i, (label, s) in enumerate(panel.series.items()):
        if not s:
            continue
        color = _COLORS[i % len(_COLORS)]
        draw.line([(sx(x), sy(y)) for x, y in s], fill=color, width=2)
        draw.text((pl + 8, pt + 6 + 13 * i), f"{label}: {s[-1][1]:.3f}", fill=color, font=font)


def plot_run(run_dir: Path, out: Path, *, width: int = 1000, height: int = 640) -> Path:
    panels = panels_for_run(run_dir)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    w, h = width // 2, height // 2
    for i, panel in enumerate(panels):
        r, c = divmod(i, 2)
        draw_panel(draw, (c * w, r * h, (c + 1) * w, (r + 1) * h), panel, font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
