"""`freeavatar eval animator`: the held-out retargeting report for the trained animators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def eval_animator(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    models: Annotated[
        Path | None, typer.Option(help="Directory with animator.pt, per_avatar_*.pt, geometry_*.pt (default: shipped).")
    ] = None,
    encoder: Annotated[
        Path | None, typer.Option(help="Encoder checkpoint (default: the one the animator was trained with).")
    ] = None,
    actors: Annotated[int, typer.Option(help="Held-out actor images.")] = 600,
    picture: Annotated[
        Path | None, typer.Option(help="PNG: actor | each avatar posed by the shared animator (reference renderer).")
    ] = None,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
) -> None:
    """Retargeting error and reference-renderer expression consistency on held-out actors:
    shared animator vs per-avatar decoders vs the geometry baseline, per built-in avatar."""
    import torch

    torch.set_num_threads(threads)
    from freeavatar_server.inference.shipped import ANIMATOR_DIR
    from freeavatar_server.training.animator.encoding import (
        ENCODER_FILE,
        encoder_checkpoint,
        load_frozen_encoder,
    )
    from freeavatar_server.training.animator.evaluate import (
        SHARED_FILE,
        build_heldout,
        evaluate_models,
        side_by_side,
    )

    models_dir = models or ANIMATOR_DIR
    if not (models_dir / SHARED_FILE).exists():
        raise typer.BadParameter(f"no {SHARED_FILE} in {models_dir} (benchmarks/animator_train.py makes one)")
    path = encoder_checkpoint(encoder, paired=models_dir / ENCODER_FILE)
    frozen = load_frozen_encoder(path)
    heldout = build_heldout(frozen, n=actors)
    report = evaluate_models(models_dir, frozen, heldout)
    report["encoder"] = str(path)
    if picture is not None:
        side_by_side(models_dir, heldout, picture)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for name, row in report["avatars"].items():
        cells = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith("_error"))
        print(f"{name}: {cells}")
    print(f"parameters: {report['parameters']}")
