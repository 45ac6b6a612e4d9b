"""`freeavatar eval realface`: whether the built-in avatars move the right way on real photos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def eval_realface(
    split: Annotated[str, typer.Option(help="Faces to judge: eval (the default), tune or all.")] = "eval",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    picture: Annotated[
        Path | None,
        typer.Option(help="Write a contact sheet PNG: each face beside the four avatars as the server posed them."),
    ] = None,
) -> None:
    """Run the live path on the real-face set (training/realface/labels.csv) and judge, per avatar
    and expression reader, whether each labelled expression moves it the right way, beside
    MediaPipe's blendshapes read alone.
    """
    if split not in ("eval", "tune", "all"):
        raise typer.BadParameter(f"split must be eval, tune or all, not {split!r}")
    # lazy: the models and the synthetic avatars' renderers (torch) load only for this command
    from freeavatar_server.images import encode_png
    from freeavatar_server.training.realface.evaluate import contact_sheet, evaluate

    report, results = evaluate(split)
    if picture is not None:
        picture.parent.mkdir(parents=True, exist_ok=True)
        picture.write_bytes(encode_png(contact_sheet(results)))
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    typer.echo(f"{report.faces} faces ({split}), found {report.found:.0%}; moved at {report.moved_threshold:g} of a range")
    for key, row in report.readers.items():
        typer.echo(f"  {key:22s} right way {row['right_way']:.3f} of {row['judged']}  balanced {row['balanced']:.3f}")
    for name, still in report.frozen_controls.items():
        typer.echo(f"  {name}: never moved: {', '.join(still) or 'none'}")
