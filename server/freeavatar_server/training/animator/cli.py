"""`freeavatar eval animator`: the held-out retargeting report for the trained animators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from freeavatar.cli_common import Printer, with_json
from freeavatar_server.inference.shipped import ANIMATOR_DIR


@with_json
def eval_animator(
    printer: Printer,
    models: Annotated[
        Path | None, typer.Option(help="Directory with animator.pt and its encoder.pt (default: shipped).")
    ] = None,
    baselines: Annotated[
        Path | None,
        typer.Option(help="Directory with the baselines per_avatar_*.pt and geometry_*.pt (default: --models; "
                          "the shipped package has none: research/animator_direct.py --baselines makes them)."),
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
    """Retargeting error and expression consistency of the animators on held-out actors.

    Per built-in avatar: the shared animator against per-avatar decoders and the geometry baseline; consistency is measured through each avatar's reference renderer."""
    import torch

    torch.set_num_threads(threads)
    from freeavatar_server.training.animator.encoding import (  # lazy: torch, for this command
        ENCODER_FILE,
        encoder_checkpoint,
        load_frozen_encoder,
    )
    from freeavatar_server.training.animator.evaluate import (  # lazy: torch, for this command
        SHARED_FILE,
        build_heldout,
        evaluate_models,
        side_by_side,
    )

    models_dir = models or ANIMATOR_DIR
    if not (models_dir / SHARED_FILE).exists():
        raise typer.BadParameter(f"no {SHARED_FILE} in {models_dir} (research/animator_direct.py --ship makes one)")
    path = encoder_checkpoint(encoder, paired=models_dir / ENCODER_FILE)
    frozen = load_frozen_encoder(path)
    heldout = build_heldout(frozen, n=actors)
    baselines_dir = baselines or models_dir
    report = evaluate_models(models_dir, frozen, heldout, baselines_dir)
    missing = [kind for kind in ("per_avatar", "geometry") if not list(baselines_dir.glob(f"{kind}_*.pt"))]
    if missing:
        typer.secho(
            f"note: baselines {', '.join(missing)} skipped: no {', '.join(f'{k}_*.pt' for k in missing)} in "
            f"{baselines_dir}. The per-avatar decoders trained as the shipped animator is (docs/models.md): "
            "python research/animator_direct.py --keyframes 20 --kinds per_avatar_embedding_units --unit-dropout 0.3 "
            "--alias-weight 0 --baselines runs/animator_direct/baselines_units, then: freeavatar eval animator "
            "--baselines runs/animator_direct/baselines_units (the geometry baseline belongs to the previous recipe: "
            "research/animator_train.py --part geometry)",
            err=True,
        )
    report["encoder"] = str(path)
    if picture is not None:
        side_by_side(models_dir, heldout, picture)
    lines = [
        f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith("_error"))
        for name, row in report["avatars"].items()
    ]
    printer.show(report, Text("\n".join([*lines, f"parameters: {report['parameters']}"])))
