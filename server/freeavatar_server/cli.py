"""Server-side commands added to the `freeavatar` CLI. Heavy imports stay inside the commands
so that `freeavatar --help` is instant."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from freeavatar_server.config import DEFAULT_PORT, ConfigError, ServerConfig
from freeavatar_server.synth.cli import synth_app


def serve(
    data_dir: Annotated[
        Path,
        typer.Option(envvar="FREEAVATAR_DATA_DIR", help="Where avatars, jobs and models are kept."),
    ] = Path("data"),
    host: Annotated[
        str, typer.Option(help="Address to bind. Anything but loopback needs --api-key-file.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = DEFAULT_PORT,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="File with one API key per line; every call must then send one."),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain: serve TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert.")] = None,
    max_running_jobs: Annotated[
        int, typer.Option(help="Training jobs run at once, each in its own process.")
    ] = 1,
    job_threads: Annotated[
        int, typer.Option(help="Torch threads per training job; 0 uses every core.")
    ] = 0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the FreeAvatar server until Ctrl-C or SIGTERM."""
    from rich.logging import RichHandler

    from freeavatar_server.server import serve as run_server

    logging.basicConfig(
        level=log_level.upper(), format="%(message)s", handlers=[RichHandler(show_path=False)]
    )
    config = ServerConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        api_key_file=api_key_file,
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_running_jobs=max_running_jobs,
        job_threads=job_threads,
    )
    try:
        asyncio.run(run_server(config))
    except ConfigError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def add_server_commands(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(synth_app, name="synth")
