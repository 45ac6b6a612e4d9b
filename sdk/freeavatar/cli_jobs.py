"""`freeavatar jobs ...` and `freeavatar train ...`: training jobs on a running server."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from freeavatar.avatar import Avatar
from freeavatar.cli_common import Printer, Remote, console, fail, with_json, with_server
from freeavatar.client import Client
from freeavatar.errors import NotFound
from freeavatar.job import Job, JobState

jobs_app = typer.Typer(help="List, watch and cancel training jobs.", no_args_is_help=True)
train_app = typer.Typer(help="Train models: avatars' renderers and animator on the server.", no_args_is_help=True)


def resolve_avatar(client: Client, reference: str) -> Avatar:
    """An avatar by id, or else by name."""
    try:
        return client.get_avatar(reference)
    except NotFound:
        for avatar in client.list_avatars():
            if avatar.name == reference:
                return avatar
        fail(f"no avatar with id or name {reference!r}")


def watch_with_progress(client: Client, job: Job) -> Job:
    """Follow a job with a progress bar until it ends; returns its final record."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"job {job.id[:8]}", total=1.0, status="")
        for event in client.watch_job(job.id):
            job = event.job
            metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(job.metrics.items()))
            status = f"{job.state.name.lower()} {metrics} {event.message}".strip()
            progress.update(task, completed=job.progress, status=status)
    return job


def report_end(job: Job) -> None:
    if job.state == JobState.SUCCEEDED:
        console.print(f"job {job.id} succeeded: model version {job.result_version}")
    else:
        fail(f"job {job.id} {job.state.name.lower()}{': ' + job.error if job.error else ''}")


@jobs_app.command("list")
@with_json
@with_server
def list_jobs(
    remote: Remote,
    printer: Printer,
    avatar: Annotated[str | None, typer.Option(help="Only this avatar's jobs (id or name).")] = None,
) -> None:
    """List training jobs, oldest first."""
    with remote.connect() as client:
        avatar_id = resolve_avatar(client, avatar).id if avatar else ""
        jobs = client.list_jobs(avatar_id)

    def table() -> Table:
        view = Table("id", "kind", "state", "progress", "avatars", "created", "error")
        for job in jobs:
            view.add_row(
                job.id,
                job.kind.name.lower(),
                job.state.name.lower(),
                f"{job.progress:.0%}",
                ", ".join(a[:8] for a in job.avatar_ids),
                f"{job.created:%Y-%m-%d %H:%M}",
                job.error,
            )
        return view

    printer.show([_job_dict(j) for j in jobs], table)


@jobs_app.command()
@with_server
def show(remote: Remote, job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Print one job as JSON."""
    with remote.connect() as client:
        print(json.dumps(_job_dict(client.get_job(job_id)), indent=2))


@jobs_app.command()
@with_server
def watch(remote: Remote, job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Follow a job's progress until it ends (exit code 1 unless it succeeds)."""
    with remote.connect() as client:
        job = watch_with_progress(client, client.get_job(job_id))
    report_end(job)


@jobs_app.command()
@with_server
def cancel(remote: Remote, job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Cancel a queued or running job."""
    with remote.connect() as client:
        job = client.cancel_job(job_id)
    console.print(f"job {job.id}: {job.state.name.lower()}")


@train_app.command()
@with_server
def renderer(
    remote: Remote,
    avatar: Annotated[str, typer.Argument(help="Avatar id or name.")],
    steps: Annotated[int | None, typer.Option(help="Optimiser steps.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Resolution in pixels (power of two).")] = None,
    time_budget_s: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    detach: Annotated[bool, typer.Option(help="Print the job id and return at once.")] = False,
) -> None:
    """Train an avatar's neural renderer on its uploaded render samples."""
    options = {"steps": steps, "image_size": image_size, "time_budget_s": time_budget_s, "seed": seed}
    with remote.connect() as client:
        job = client.train_renderer(resolve_avatar(client, avatar).id, **options)
        if detach:
            console.print(f"queued job {job.id}")
            return
        job = watch_with_progress(client, job)
    report_end(job)


@train_app.command()
@with_server
def animator(
    remote: Remote,
    avatars: Annotated[list[str], typer.Argument(help="Avatar ids or names (each needs a trained renderer).")],
    steps: Annotated[int | None, typer.Option(help="Optimiser steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Actor images per step and avatar.")] = None,
    time_budget_s: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    keyframe_limit: Annotated[int | None, typer.Option(help="Use at most this many keyframes (0: none).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    detach: Annotated[bool, typer.Option(help="Print the job id and return at once.")] = False,
) -> None:
    """Tune the shared animator for these avatars; publishes an animator version per avatar.

    The animator learns expression consistency through each avatar's neural renderer, plus the avatar's keyframes."""
    options = {
        "steps": steps,
        "batch_size": batch_size,
        "time_budget_s": time_budget_s,
        "keyframe_limit": keyframe_limit,
        "seed": seed,
    }
    with remote.connect() as client:
        ids = [resolve_avatar(client, avatar).id for avatar in avatars]
        job = client.finetune_animator(ids, **options)
        if detach:
            console.print(f"queued job {job.id}")
            return
        job = watch_with_progress(client, job)
    report_end(job)


def _job_dict(job: Job) -> dict[str, object]:
    return {
        "id": job.id,
        "kind": job.kind.name.lower(),
        "state": job.state.name.lower(),
        "avatar_ids": list(job.avatar_ids),
        "progress": job.progress,
        "metrics": job.metrics,
        "error": job.error,
        "created": job.created.isoformat(),
        "started": job.started.isoformat() if job.started else None,
        "ended": job.ended.isoformat() if job.ended else None,
        "result_version": job.result_version,
    }
