"""The contact sheet: synthetic actors x expressions, nuisance variety, and every built-in
avatar across each of its controls and posed by the ground-truth mapping for the same
expressions, in one labelled PNG (docs/synthetic.png)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from freeavatar_server.synth.actors import (
    MASCOT_OFFSET,
    N_AU,
    STYLISED_OFFSET,
    prototype_vector,
    render_faces,
)
from freeavatar_server.synth.avatars import BUILTIN_AVATARS, BuiltinAvatar

SHEET_EXPRESSIONS = (
    "neutral", "smile", "laugh", "grin", "sad", "surprise", "fear", "anger", "rage", "disgust",
    "contempt", "wink", "kiss", "puff", "jaw_shift",
)  # fmt: skip
SHEET_IDENTITIES = (0, 4, 8, 17, 20, 31)  # a spread of skin, hair, glasses, beard


def _expression(name: str) -> np.ndarray:
    return np.zeros(N_AU, np.float32) if name == "neutral" else prototype_vector(name)


def _avatar_cells(avatar: BuiltinAvatar, cell: int) -> tuple[np.ndarray, list[str]]:
    """Neutral, then each control pushed to its max (min for signed ones gets its own cell)."""
    rigs, labels = [avatar.neutral(1)[0]], ["neutral"]
    for i, control in enumerate(avatar.spec.controls):
        rig = avatar.neutral(1)[0]
        rig[i] = control.max
        rigs.append(rig)
        labels.append(control.name)
        if control.min < 0:
            rig = avatar.neutral(1)[0]
            rig[i] = control.min
            rigs.append(rig)
            labels.append(f"{control.name}-")
    return avatar.render(np.stack(rigs), size=cell), labels


def make_sheet(cell: int = 96, columns: int = 15, seed: int = 7) -> np.ndarray:
    """(H, W, 3) uint8 contact sheet."""
    sections: list[tuple[str, np.ndarray, list[str]]] = []
    names = list(SHEET_EXPRESSIONS)[:columns]
    expr = np.stack([_expression(n) for n in names])
    for ident in SHEET_IDENTITIES:
        batch = render_faces(
            expr,
            np.full(len(names), ident),
            size=cell,
            seed=seed,
            poses=np.zeros((len(names), 3), np.float32),
            nuisance=False,
        )
        sections.append((f"actor {ident} x expressions (front, studio light)", batch.images, names))
    rng = np.random.default_rng(seed)
    wild_ids = rng.integers(0, 10**6, columns)
    wild = render_faces(
        np.tile(prototype_vector("smile"), (columns, 1)), wild_ids, size=cell, seed=seed
    )
    sections.append(
        (
            "smile on random identities: pose, light, clutter, blur, noise, JPEG",
            wild.images,
            [f"y{p[0]:+.0f} p{p[1]:+.0f} r{p[2]:+.0f}" for p in wild.poses],
        )
    )
    for offset, kind in ((STYLISED_OFFSET, "stylised characters"), (MASCOT_OFFSET, "mascots")):
        batch = render_faces(expr, offset + np.arange(len(names)), size=cell, seed=seed,
                             poses=np.zeros((len(names), 3), np.float32), nuisance=False)
        sections.append((f"{kind} (encoder training only) x expressions", batch.images, names))
    for avatar in BUILTIN_AVATARS.values():
        images, labels = _avatar_cells(avatar, cell)
        sections.append((f"avatar {avatar.name}: {avatar.description}", images, labels))
        # The evaluation's ground truth, drawn: a smile must look like a smile on every avatar
        # (the robot's once frowned, which only a picture like this shows at a glance).
        posed = avatar.render(avatar.expected_rig(expr), size=cell)
        sections.append((f"avatar {avatar.name} posed by the ground-truth mapping (evaluation only) x expressions", posed, names))
    return _compose(sections, cell, columns)


def _compose(
    sections: list[tuple[str, np.ndarray, list[str]]], cell: int, columns: int
) -> np.ndarray:
    from PIL import Image, ImageDraw

    caption, header, pad = 12, 18, 2
    rows = []
    for title, images, labels in sections:
        n_rows = -(-len(images) // columns)
        rows.append(("header", title))
        for r in range(n_rows):
            rows.append(
                (
                    "cells",
                    (
                        images[r * columns : (r + 1) * columns],
                        labels[r * columns : (r + 1) * columns],
                    ),
                )
            )
    width = columns * (cell + pad) + pad
    height = sum(header if kind == "header" else cell + caption + pad for kind, _ in rows) + pad
    sheet = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for kind, payload in rows:
        if kind == "header":
            draw.text((pad + 2, y + 3), str(payload), fill=(235, 235, 235))
            y += header
            continue
        images, labels = payload  # type: ignore[misc]
        for c, (im, label) in enumerate(zip(images, labels, strict=True)):
            x = pad + c * (cell + pad)
            sheet.paste(Image.fromarray(im), (x, y))
            draw.text((x + 1, y + cell), label[: cell // 6], fill=(180, 180, 190))
        y += cell + caption + pad
    return np.asarray(sheet)


def write_sheet(out: str | os.PathLike[str], cell: int = 96) -> Path:
    from PIL import Image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_sheet(cell=cell)).save(out, optimize=True)
    return out
