"""`freeavatar eval realface`: whether the built-in avatars move the right way on real photos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from freeavatar.cli_common import Printer, with_json


@with_json
def eval_realface(
    printer: Printer,
    split: Annotated[str, typer.Option(help="Faces to judge: eval (the default), tune or all.")] = "eval",
    picture: Annotated[
        Path | None,
        typer.Option(help="Write a contact sheet PNG: each face beside the four avatars as the server posed them."),
    ] = None,
) -> None:
    """Judge whether each labelled real face moves the avatars the right way.

    Runs the live path on the real-face set (training/realface/labels.csv), per avatar and expression reader, beside MediaPipe's blendshapes read alone.
    """
    if split not in ("eval", "tune", "all"):
        raise typer.BadParameter(f"split must be eval, tune or all, not {split!r}")
    # lazy: the models and the synthetic avatars' renderers (torch) load only for this command
    from freeavatar_server.images import encode_png  # lazy: cv2
    from freeavatar_server.training.realface.evaluate import contact_sheet, evaluate  # lazy: torch

    report, results = evaluate(split)
    if picture is not None:
        picture.parent.mkdir(parents=True, exist_ok=True)
        picture.write_bytes(encode_png(contact_sheet(results)))
    lines = [f"{report.faces} faces ({split}), found {report.found:.0%}; moved at {report.moved_threshold:g} of a range"]
    for key, row in report.readers.items():
        lines.append(f"  {key:22s} right way {row['right_way']:.3f} of {row['judged']}  balanced {row['balanced']:.3f}")
    for name, still in report.frozen_controls.items():
        lines.append(f"  {name}: never moved: {', '.join(still) or 'none'}")
    printer.show(report.to_json(), Text("\n".join(lines)))
