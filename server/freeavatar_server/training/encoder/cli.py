"""Commands for the expression encoder. Heavy imports (torch, onnxruntime) stay inside the
functions so `freeavatar --help` stays instant.

In the `freeavatar` tree (`freeavatar_server.app.cli` places them): `freeavatar train encoder`
(`train_encoder`), `freeavatar eval encoder` (`eval_encoder`) and `freeavatar encoder export |
ship | curves` (`encoder_app`). `encoder_app` also keeps `train` and `eval` as hidden commands:
the old `freeavatar encoder train | eval` spellings, and the standalone entry under torchrun:
`python -m freeavatar_server.training.encoder.cli train ...`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from freeavatar.cli_common import Printer, with_json
from freeavatar_server.inference.shipped import ENCODER_INT8_ONNX, ENCODER_ONNX

encoder_app = typer.Typer(
    help="Expression encoder files: export a checkpoint to ONNX, ship a run, plot its curves.",
    no_args_is_help=True,
)


def train_encoder(
    out: Annotated[Path, typer.Option(help="Run directory: checkpoints, config.json, histories.")] = Path("runs/encoder"),
    stages: Annotated[str, typer.Option(help="Comma-separated stages: mae, triplet, classifier (baseline).")] = "mae,triplet,classifier",
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoints in --out, with its config.json unless --config names another.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation and batch sampling (default 0, or the config's).")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of face images/videos for MAE pretraining (default: synthetic world).")] = None,
    fec_csv: Annotated[Path | None, typer.Option(help="FEC-format triplet CSV with local paths for triplet tuning (default: synthetic triplets).")] = None,
    mae_steps: Annotated[int | None, typer.Option(help="MAE pretraining steps.")] = None,
    triplet_steps: Annotated[int | None, typer.Option(help="Triplet tuning steps (also the classifier baseline's budget).")] = None,
    triplet_lr: Annotated[float | None, typer.Option(help="Triplet tuning's peak learning rate (a fine-tune takes less).")] = None,
    classifier_steps: Annotated[int | None, typer.Option(help="Classifier baseline steps (default: triplet steps).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads per process.")] = None,
    stylised: Annotated[float | None, typer.Option(help="Share of synthetic people drawn as stylised characters (0-1).")] = None,
    mascots: Annotated[float | None, typer.Option(help="Share of synthetic faces drawn as mascots: critters, robots, blobs (0-1).")] = None,
    au_weight: Annotated[float | None, typer.Option(help="Weight of the action-unit read-out's loss beside the triplet loss (0: triplets alone).")] = None,
    init: Annotated[Path | None, typer.Option(help="Start triplet tuning from this encoder checkpoint instead of the MAE backbone.")] = None,
    img_size: Annotated[int | None, typer.Option(help="Face crop side in pixels, a multiple of the patch (16): a new run's (an --init encoder of another size keeps its weights).")] = None,
    depth: Annotated[int | None, typer.Option(help="Transformer blocks: a new run's (an --init encoder with fewer keeps its weights, and the blocks added start as the identity).")] = None,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="Forward passes under bfloat16 autocast: half the time a step on an AVX-512 BF16 CPU (untried on others).")] = None,
    reuse: Annotated[int | None, typer.Option(min=1, help="Steps each rendered synthetic batch trains, each with its own augmentation (the renderer is slower than a --bf16 step).")] = None,
    config: Annotated[Path | None, typer.Option(help="A config.json from an earlier run; flags override it.")] = None,
    ship: Annotated[bool, typer.Option(help="After training, install the run as the package's default encoder.")] = False,
) -> None:
    """Train the expression encoder: MAE pretraining, then triplet tuning (+ classifier baseline).

    Runs as one process or under torchrun (DDP; gloo on CPU, NCCL on GPU)."""
    from freeavatar_server.training.encoder.train import (  # lazy: torch
        RunConfigError,
        TrainConfig,
        train,
    )

    if config is None and resume and (out / "config.json").exists():
        config = out / "config.json"  # a resumed run goes on as it was configured
    try:
        cfg = TrainConfig.from_dict(json.loads(config.read_text())) if config else TrainConfig()
    except ValueError as error:  # a config.json no run could take
        raise typer.BadParameter(f"{config}: {error}", param_hint="--config") from error
    overrides = {
        "out_dir": str(out), "seed": seed, "images": str(images) if images else None,
        "fec_csv": str(fec_csv) if fec_csv else None, "mae_steps": mae_steps,
        "triplet_steps": triplet_steps, "triplet_lr": triplet_lr, "classifier_steps": classifier_steps,
        "threads": threads, "stylised": stylised, "mascots": mascots, "au_weight": au_weight,
        "init": str(init) if init else None, "bf16": bf16, "reuse": reuse,
    }  # fmt: skip
    keep_from_file = {"images", "fec_csv"}
    d = cfg.to_dict()
    d.update({k: v for k, v in overrides.items() if v is not None or (k in keep_from_file and not config)})
    if d["au_weight"] > 0:
        from freeavatar_server.synth.actors import N_AU  # lazy: synth loads torch

        d["model"] = {**d["model"], "au_units": N_AU}
    if img_size is not None:
        if resume and img_size != d["model"]["img_size"]:
            raise typer.BadParameter(f"a resumed run keeps its crop size ({d['model']['img_size']})", param_hint="--img-size")
        if img_size < 32 or img_size % d["model"]["patch"]:
            raise typer.BadParameter(f"must be a multiple of {d['model']['patch']} from 32, got {img_size}", param_hint="--img-size")
        d["model"] = {**d["model"], "img_size": img_size}
    if depth is not None:
        if resume and depth != d["model"]["depth"]:
            raise typer.BadParameter(f"a resumed run keeps its depth ({d['model']['depth']})", param_hint="--depth")
        if depth < 1:
            raise typer.BadParameter(f"must be at least 1, got {depth}", param_hint="--depth")
        d["model"] = {**d["model"], "depth": depth}
    cfg = TrainConfig.from_dict(d)  # valid: the file's config was, and every flag is checked
    if cfg.init and not Path(cfg.init).exists():
        raise typer.BadParameter(f"no checkpoint at {cfg.init}", param_hint="--init")
    for name, share in (("stylised", cfg.stylised), ("mascots", cfg.mascots)):
        if not 0.0 <= share <= 1.0:
            raise typer.BadParameter(f"must be between 0 and 1, got {share}", param_hint=f"--{name}")
    if cfg.stylised + cfg.mascots > 1.0:
        raise typer.BadParameter(f"--stylised + --mascots is {cfg.stylised + cfg.mascots:g} (over 1)", param_hint="--mascots")
    if (cfg.fec_csv or cfg.images) and "classifier" in stages:
        typer.secho("note: the classifier baseline needs synthetic ground truth; skipping it", err=True)
        stages = ",".join(s for s in stages.split(",") if s != "classifier")
    try:
        train(cfg, tuple(s.strip() for s in stages.split(",") if s.strip()), resume=resume)
    except RunConfigError as error:  # a run the flags or config cannot go on with (e.g. another --reuse)
        raise typer.BadParameter(str(error)) from error
    if ship:
        _ship(out)


def _ship(run_dir: Path) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    from freeavatar_server.training.encoder.export import ship  # lazy: ONNX Runtime, torch

    for p in ship(run_dir):
        typer.echo(f"wrote {p}")


@with_json
def eval_encoder(
    printer: Printer,
    run_dir: Annotated[Path | None, typer.Option(help="A training run directory (default: the shipped models).")] = None,
    onnx: Annotated[bool, typer.Option(help="Score the encoder through its ONNX graph on ONNX Runtime.")] = False,
    int8: Annotated[bool, typer.Option(help="Score the int8 ONNX graph the live pipeline runs.")] = False,
    n_triplets: Annotated[int, typer.Option(help="Held-out triplets to build.")] = 2000,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
) -> None:
    """Triplet accuracy on held-out identities against baselines, and identity invariance."""
    from freeavatar_server.training.encoder.evaluate import (  # lazy: torch, for this command
        Weights,
        default_weights,
        evaluate,
    )
    from freeavatar_server.training.encoder.export import export_onnx, quantize_onnx  # lazy: ORT

    weights = default_weights(run_dir)
    if not weights.encoder.exists():
        typer.secho(f"error: no encoder weights at {weights.encoder}; train one first", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if onnx or int8:
        onnx_path = ENCODER_ONNX if run_dir is None else Path(run_dir) / ENCODER_ONNX.name
        int8_path = ENCODER_INT8_ONNX if run_dir is None else Path(run_dir) / ENCODER_INT8_ONNX.name
        if run_dir is not None:
            from freeavatar_server.training.encoder.train import load_encoder  # lazy: torch

            export_onnx(load_encoder(weights.encoder), onnx_path)
            if int8:
                quantize_onnx(onnx_path, int8_path)
        weights = Weights(int8_path if int8 else onnx_path, weights.mae, weights.classifier)
    report = evaluate(weights, n_triplets=n_triplets, threads=threads)
    printer.show(report, lambda: _report_table(report), indent=None)


def _report_table(report: dict) -> Table:
    table = Table(title=f"Held-out triplets ({report['n_triplets']}, {report['n_unambiguous']} unambiguous)")
    for col in ("features", "unambiguous", "all", "identity invariance", "action-unit probe r"):
        table.add_column(col)
    acc = report["triplet_accuracy"]
    table.add_row("expression encoder", f"{acc['unambiguous']:.3f}", f"{acc['all']:.3f}",
                  f"{report['identity_invariance']:.3f}", f"{report['au_probe_correlation']:.3f}")  # fmt: skip
    if "au_probe_correlation_with_read_out" in report:
        table.add_row("expression encoder + its action-unit read-out", "-", "-", "-", f"{report['au_probe_correlation_with_read_out']:.3f}")
    for name, r in report["baselines"].items():
        inv = report["identity_invariance_baselines"].get(name)
        probe = report["au_probe_correlation_baselines"].get(name)
        table.add_row(name, f"{r['unambiguous']:.3f}", f"{r['all']:.3f}", f"{inv:.3f}" if inv is not None else "-",
                      f"{probe:.3f}" if probe is not None else "-")  # fmt: skip
    return table


@encoder_app.command("export")
def export_encoder(
    checkpoint: Annotated[Path, typer.Argument(help="A triplet-stage checkpoint (.pt).")],
    out: Annotated[Path, typer.Option(help="ONNX file to write.")] = Path("expression_encoder.onnx"),
    int8: Annotated[bool, typer.Option(help="Also write the int8 copy the live pipeline runs (<out>.int8.onnx).")] = False,
) -> None:
    """Export an encoder checkpoint to ONNX."""
    from freeavatar_server.training.encoder.export import export_onnx, quantize_onnx  # lazy: ORT
    from freeavatar_server.training.encoder.train import load_encoder  # lazy: torch

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
    from freeavatar_server.training.encoder.curves import plot_run  # lazy: PIL, for this command

    typer.echo(f"wrote {plot_run(run_dir, out)}")


# The old spellings of `freeavatar train encoder` and `freeavatar eval encoder`, hidden; also
# what torchrun runs: `python -m freeavatar_server.training.encoder.cli train ...`.
encoder_app.command("train", hidden=True)(train_encoder)
encoder_app.command("eval", hidden=True)(eval_encoder)

if __name__ == "__main__":
    encoder_app()
