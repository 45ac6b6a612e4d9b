"""`freeavatar train face`: train the face localiser on synthetic frames and export its ONNX
model (the typer face of `freeavatar_server.training.face.train`; same stages, same defaults)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class Stage(StrEnum):
    generate = "generate"
    fit = "fit"
    export = "export"
    all = "all"


def train_face(
    stage: Annotated[
        Stage,
        typer.Argument(
            help="generate: render frame shards to OUT/data (resumable); fit: train on the shards "
            "present; export: write the ONNX model; all: the three in turn."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run directory: data shards, checkpoint, ONNX.")] = Path(
        "runs/face"
    ),
    steps: Annotated[
        int | None, typer.Option(help="Optimiser steps (default: the shipped recipe's).")
    ] = None,
    n_full: Annotated[
        int | None, typer.Option(help="Whole camera frames to render (default: the recipe's).")
    ] = None,
    n_crop: Annotated[
        int | None, typer.Option(help="Tracking-window crops to render (default: the recipe's).")
    ] = None,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
    ship: Annotated[
        bool, typer.Option(help="Copy the exported model into the package (the shipped one).")
    ] = False,
) -> None:
    """Train the face localiser on synthetic frames, then export its ONNX model.

    `freeavatar train face all --ship` reproduces the shipped weights (about an hour on one busy CPU core). `fit` can start while `generate` still runs.
    """
    import torch  # lazy: torch loads only for this command

    from freeavatar_server.inference.face.detection import LocaliserConfig  # lazy: cv2, ORT
    from freeavatar_server.training.face.train import (  # lazy: torch loads only for this command
        TrainConfig,
        export,
        fit,
        generate,
    )

    torch.set_num_threads(threads)
    net_cfg = LocaliserConfig()
    sizes = {"n_full": n_full, "n_crop": n_crop, "steps": steps}
    cfg = TrainConfig(**{name: value for name, value in sizes.items() if value is not None})
    if stage in (Stage.generate, Stage.all):
        generate(out, cfg.n_full, cfg.n_crop, net_cfg.crop_input)
    if stage in (Stage.fit, Stage.all):
        fit(out, cfg, net_cfg)
    if stage in (Stage.export, Stage.all):
        typer.echo(f"wrote {export(out, ship)}")
