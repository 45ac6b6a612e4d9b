"""Commands for the expression encoder. Heavy imports (torch, onnxruntime) stay inside the
functions so `freeavatar --help` stays instant.

Wiring into the main CLI (the lead's `add_server_commands`):
    train_app.command("encoder")(train_encoder)   -> freeavatar train encoder ...
    eval_app.command("encoder")(eval_encoder)     -> freeavatar eval encoder [--json]
or mount the whole group: app.add_typer(encoder_app, name="encoder").
Standalone / under torchrun:  python -m freeavatar_server.training.encoder.cli train ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

encoder_app = typer.Typer(help="Expression encoder: train, evaluate, export, ship.", no_args_is_help=True)


@encoder_app.command("train")
def train_encoder(
    out: Annotated[Path, typer.Option(help="Run directory: checkpoints, config.json, histories.")] = Path("runs/encoder"),
    stages: Annotated[str, typer.Option(help="Comma-separated stages: mae, triplet, classifier (baseline).")] = "mae,triplet,classifier",
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoints in --out.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and batch sampling.")] = 0,
    images: Annotated[Path | None, typer.Option(help="Folder of face images/videos for MAE pretraining (default: synthetic world).")] = None,
    fec_csv: Annotated[Path | None, typer.Option(help="FEC-format triplet CSV with local paths for triplet tuning (default: synthetic triplets).")] = None,
    mae_steps: Annotated[int | None, typer.Option(help="MAE pretraining steps.")] = None,
    triplet_steps: Annotated[int | None, typer.Option(help="Triplet tuning steps (also the classifier baseline's budget).")] = None,
    classifier_steps: Annotated[int | None, typer.Option(help="Classifier baseline steps (default: triplet steps).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads per process.")] = None,
    stylised: Annotated[float | None, typer.Option(help="Share of synthetic people drawn as stylised characters (0-1).")] = None,
    mascots: Annotated[float | None, typer.Option(help="Share of synthetic faces drawn as mascots: critters, robots, blobs (0-1).")] = None,
    config: Annotated[Path | None, typer.Option(help="A config.json from an earlier run; flags override it.")] = None,
    ship: Annotated[bool, typer.Option(help="After training, install the run as the package's default encoder.")] = False,
) -> None:
    """Train the expression encoder: MAE pretraining, then triplet tuning (+ classifier baseline).

    Runs as one process or under torchrun (DDP; gloo on CPU, NCCL on GPU)."""
    from freeavatar_server.training.encoder.train import TrainConfig, train

    cfg = TrainConfig.from_dict(json.loads(config.read_text())) if config else TrainConfig()
    overrides = {
        "out_dir": str(out), "seed": seed, "images": str(images) if images else None,
        "fec_csv": str(fec_csv) if fec_csv else None, "mae_steps": mae_steps,
        "triplet_steps": triplet_steps, "classifier_steps": classifier_steps,
        "threads": threads, "stylised": stylised, "mascots": mascots,
    }  # fmt: skip
    keep_from_file = {"images", "fec_csv"}
    d = cfg.to_dict()
    d.update({k: v for k, v in overrides.items() if v is not None or (k in keep_from_file and not config)})
    cfg = TrainConfig.from_dict(d)
    for name, share in (("stylised", cfg.stylised), ("mascots", cfg.mascots)):
        if not 0.0 <= share <= 1.0:
            raise typer.BadParameter(f"must be between 0 and 1, got {share}", param_hint=f"--{name}")
    if cfg.stylised + cfg.mascots > 1.0:
        raise typer.BadParameter(f"--stylised + --mascots is {cfg.stylised + cfg.mascots:g} (over 1)", param_hint="--mascots")
    if (cfg.fec_csv or cfg.images) and "classifier" in stages:
        typer.secho("note: the classifier baseline needs synthetic ground truth; skipping it", err=True)
        stages = ",".join(s for s in stages.split(",") if s != "classifier")
    train(cfg, tuple(s.strip() for s in stages.split(",") if s.strip()), resume=resume)
    if ship:
        _ship(out)


def _ship(run_dir: Path) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    from freeavatar_server.training.encoder.export import ship

    for p in ship(run_dir):
        typer.echo(f"wrote {p}")


@encoder_app.command("eval")
def eval_encoder(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
    run_dir: Annotated[Path | None, typer.Option(help="A training run directory (default: the shipped models).")] = None,
    onnx: Annotated[bool, typer.Option(help="Score the encoder through its ONNX graph on ONNX Runtime.")] = False,
    int8: Annotated[bool, typer.Option(help="Score the int8 ONNX graph the live pipeline runs.")] = False,
    n_triplets: Annotated[int, typer.Option(help="Held-out triplets to build.")] = 2000,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
) -> None:
    """Triplet accuracy on held-out identities against baselines, and identity invariance."""
    from freeavatar_server.inference.shipped import ENCODER_INT8_ONNX as INT8_ONNX
    from freeavatar_server.inference.shipped import ENCODER_ONNX as DEFAULT_ONNX
    from freeavatar_server.training.encoder.evaluate import Weights, default_weights, evaluate
    from freeavatar_server.training.encoder.export import export_onnx, quantize_onnx

    weights = default_weights(run_dir)
    if not weights.encoder.exists():
        typer.secho(f"error: no encoder weights at {weights.encoder}; train one first", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if onnx or int8:
        onnx_path = DEFAULT_ONNX if run_dir is None else Path(run_dir) / DEFAULT_ONNX.name
        int8_path = INT8_ONNX if run_dir is None else Path(run_dir) / INT8_ONNX.name
        if run_dir is not None:
            from freeavatar_server.training.encoder.train import load_encoder

            export_onnx(load_encoder(weights.encoder), onnx_path)
            if int8:
                quantize_onnx(onnx_path, int8_path)
        weights = Weights(int8_path if int8 else onnx_path, weights.mae, weights.classifier)
    report = evaluate(weights, n_triplets=n_triplets, threads=threads)
    if json_out:
        typer.echo(json.dumps(report))
        return
    _print_report(report)


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Held-out triplets ({report['n_triplets']}, {report['n_unambiguous']} unambiguous)")
    for col in ("features", "unambiguous", "all", "identity invariance"):
        table.add_column(col)
    acc = report["triplet_accuracy"]
    table.add_row("expression encoder", f"{acc['unambiguous']:.3f}", f"{acc['all']:.3f}", f"{report['identity_invariance']:.3f}")
    for name, r in report["baselines"].items():
        inv = report["identity_invariance_baselines"].get(name)
        table.add_row(name, f"{r['unambiguous']:.3f}", f"{r['all']:.3f}", f"{inv:.3f}" if inv is not None else "-")
    Console().print(table)


@encoder_app.command("export")
def export_encoder(
    checkpoint: Annotated[Path, typer.Argument(help="A triplet-stage checkpoint (.pt).")],
    out: Annotated[Path, typer.Option(help="ONNX file to write.")] = Path("expression_encoder.onnx"),
    int8: Annotated[bool, typer.Option(help="Also write the int8 copy the live pipeline runs (<out>.int8.onnx).")] = False,
) -> None:
    """Export an encoder checkpoint to ONNX."""
    from freeavatar_server.training.encoder.export import export_onnx, quantize_onnx
    from freeavatar_server.training.encoder.train import load_encoder

    typer.echo(f"wrote {export_onnx(load_encoder(checkpoint), out)}")
    if int8:
        typer.echo(f"wrote {quantize_onnx(out, out.with_suffix('.int8.onnx'))}")


@encoder_app.command("ship")
def ship_encoder(run_dir: Annotated[Path, typer.Argument(help="A finished training run directory.")]) -> None:
    """Install a run as the package's default encoder (ONNX + slim checkpoints in models/)."""
    _ship(run_dir)


@encoder_app.command("curves")
def curves(
    run_dir: Annotated[Path, typer.Argument(help="A training run directory.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("docs/encoder_curves.png"),
) -> None:
    """Plot a run's training curves (MAE loss, triplet loss/accuracy, classifier baseline)."""
    from freeavatar_server.training.encoder.curves import plot_run

    typer.echo(f"wrote {plot_run(run_dir, out)}")


if __name__ == "__main__":
    encoder_app()
