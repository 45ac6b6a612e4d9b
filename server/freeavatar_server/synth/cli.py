"""`freeavatar synth ...`: render test videos, the contact sheet and FEC-style triplet sets.

Heavy imports (torch, numpy, av) stay inside the commands so `freeavatar --help` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _one_thread() -> None:
    """The renderer is a long chain of small elementwise ops: torch's intra-op threads buy
    little there and, on a busy machine, spin-wait badly (measured 20x slower on 2 loaded
    cores). A CLI process owns its thread setting, so pin it to one."""
    import torch

    torch.set_num_threads(1)


synth_app = typer.Typer(
    help="Synthetic world: test videos with ground truth, contact sheets, comparison triplets.",
    no_args_is_help=True,
)


@synth_app.command()
def video(
    out: Annotated[
        Path,
        typer.Option(help="Video file to write; the ground truth goes to the .json beside it."),
    ] = Path("clip.mp4"),
    seconds: Annotated[float, typer.Option(min=0.05, help="Clip length.")] = 10.0,
    fps: Annotated[float, typer.Option(min=1.0, max=120.0, help="Frames per second.")] = 30.0,
    seed: Annotated[
        int, typer.Option(help="Everything (actor, trajectory, scene) follows from it.")
    ] = 0,
    width: Annotated[int, typer.Option(min=64, max=4096, help="Frame width (even).")] = 640,
    height: Annotated[int, typer.Option(min=64, max=4096, help="Frame height (even).")] = 480,
    identity: Annotated[
        int | None, typer.Option(help="Actor identity id (default: from the seed).")
    ] = None,
) -> None:
    """Render a synthetic actor clip with per-frame action units, head pose and face box."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from freeavatar_server.synth.video import make_trajectory, write_video  # lazy: torch

    if width % 2 or height % 2:
        raise typer.BadParameter("width and height must be even (yuv420p video)")
    _one_thread()
    traj = make_trajectory(
        seconds, fps, seed=seed, width=width, height=height, identity_id=identity
    )
    columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("frames", total=traj.n_frames)
        json_path = write_video(traj, out, on_frames=lambda k: progress.advance(task, k))
    typer.echo(
        f"wrote {out} ({traj.n_frames} frames, {width}x{height} @ {fps:g} fps) and {json_path}"
    )


@synth_app.command()
def sheet(
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("docs/synthetic.png"),
    cell: Annotated[int, typer.Option(min=32, max=256, help="Cell size in pixels.")] = 96,
) -> None:
    """Write the contact sheet: actors x expressions, nuisance variety, each avatar's controls."""
    from freeavatar_server.synth.sheet import write_sheet  # lazy: torch

    _one_thread()
    write_sheet(out, cell=cell)
    typer.echo(f"wrote {out}")


@synth_app.command()
def triplets(
    out: Annotated[
        Path, typer.Option(help="Folder for images/, triplets.csv and triplets_truth.json.")
    ] = Path("fec_synth"),
    n: Annotated[int, typer.Option(min=1, help="Number of triplets.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    identities: Annotated[
        int, typer.Option(min=3, help="Identity ids are drawn from [first, first + identities).")
    ] = 10_000,
    first_identity: Annotated[
        int, typer.Option(help="First identity id (keep train and test ranges apart).")
    ] = 0,
    size: Annotated[int, typer.Option(min=32, max=512, help="Image size.")] = 128,
    ambiguous_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of triplets with nearly tied closest pairs.")
    ] = 0.2,
    label_noise: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Chance that a clear triplet's label is flipped.")
    ] = 0.05,
    annotators: Annotated[
        int, typer.Option(min=1, max=10, help="Labels per triplet, as FEC's raters.")
    ] = 1,
) -> None:
    """Materialise FEC-style comparison triplets as PNGs plus an FEC-layout CSV."""
    from freeavatar_server.synth.triplets import export_triplets, make_triplets  # lazy: torch

    _one_thread()
    ids = range(first_identity, first_identity + identities)
    made = make_triplets(n, seed=seed, identity_ids=ids, ambiguous_share=ambiguous_share,
                         label_noise=label_noise, n_annotators=annotators)  # fmt: skip
    csv_path = export_triplets(made, out, size=size)
    typer.echo(f"wrote {len(made)} triplets to {csv_path}")
