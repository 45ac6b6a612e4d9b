"""`freeavatar bench stream --picture`: where an analysed frame's milliseconds go at each rung
of the capacity ladder, as stacked bars, drawn with Pillow (no plotting library in the
dependencies)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# the pipeline's stages in the order a frame meets them, and their colours
STAGE_COLOURS = {
    "decode": (31, 119, 180),
    "mesh": (214, 39, 40),
    "follow": (255, 152, 150),
    "pose": (44, 160, 44),
    "encode": (255, 127, 14),
    "animate": (148, 103, 189),
    "handoff": (199, 199, 199),
    "publish": (140, 86, 75),
}
WIDTH, HEIGHT = 900, 520
LEFT, RIGHT, TOP, BOTTOM = 60, 150, 50, 60


def draw_ladder(result: dict, out: Path) -> Path:
    """One bar per rung of `result["ladder"]` (bench_stream's JSON), its stages stacked, with
    the share of frames delivered and the p99 latency above it."""
    rungs = [r for r in result["ladder"] if r.get("stage_ms")]
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((LEFT, 12), "Mean ms per analysed frame, by stage, at each rung (actors x 4 avatars at 30 fps)",
              fill="black", font=font)  # fmt: skip
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max((sum(r["stage_ms"].values()) for r in rungs), default=1.0) * 1.1 or 1.0
    y = lambda ms: TOP + plot_h - ms / top * plot_h  # noqa: E731
    for tick in _ticks(top):
        draw.line((LEFT, y(tick), LEFT + plot_w, y(tick)), fill=(230, 230, 230))
        draw.text((8, y(tick) - 6), f"{tick:g} ms", fill="black", font=font)
    slot = plot_w / max(len(rungs), 1)
    for i, rung in enumerate(rungs):
        x0, x1 = LEFT + i * slot + slot * 0.2, LEFT + (i + 1) * slot - slot * 0.2
        base = 0.0
        for stage, colour in STAGE_COLOURS.items():
            ms = rung["stage_ms"].get(stage, 0.0)
            if ms > 0:
                draw.rectangle((x0, y(base + ms), x1, y(base)), fill=colour)
                base += ms
        label = f"{rung['delivered']:.0%}, p99 {rung['latency_ms']['p99']:.0f}"
        draw.text((x0 - 4, y(base) - 14), label, fill="black", font=font)
        draw.text(((x0 + x1) / 2 - 16, TOP + plot_h + 8), f"{rung['actors']} actor{'s' if rung['actors'] != 1 else ''}", fill="black", font=font)
    for i, (stage, colour) in enumerate(reversed(STAGE_COLOURS.items())):
        ly = TOP + 16 * i
        draw.rectangle((WIDTH - RIGHT + 16, ly, WIDTH - RIGHT + 28, ly + 10), fill=colour)
        draw.text((WIDTH - RIGHT + 34, ly - 1), stage, fill="black", font=font)
    draw.text((LEFT, HEIGHT - 28), "above each bar: frames delivered x avatars, p99 latency ms; handoff: the wait "
              "for the analysis worker and the trip there and back", fill=(90, 90, 90), font=font)  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def _ticks(top: float) -> list[float]:
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500) if top / s <= 8)
    return [step * k for k in range(int(top / step) + 1)]
