"""`freeavatar synth ...`: render test videos and the contact sheet."""

from __future__ import annotations

import typer

synth_app = typer.Typer(help="Synthetic world: render test videos and contact sheets.", no_args_is_help=True)
