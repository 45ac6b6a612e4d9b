"""Server-side commands added to the `freeavatar` CLI. Heavy imports stay inside the commands
so that `freeavatar --help` is instant."""

from __future__ import annotations

import typer

from freeavatar_server.synth.cli import synth_app


def add_server_commands(app: typer.Typer) -> None:
    app.add_typer(synth_app, name="synth")
