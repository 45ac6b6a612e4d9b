"""The `freeavatar` command: avatar management over the SDK, plus the server's commands when
the [server] extra is installed."""

from __future__ import annotations

import typer

from freeavatar.cli_avatars import avatars_app
from freeavatar.cli_jobs import jobs_app, train_app
from freeavatar.cli_outputs import outputs_app
from freeavatar.cli_sessions import sessions_app

app = typer.Typer(
    help="FreeAvatar: drive game-engine avatars from an actor's camera.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(avatars_app, name="avatars")
app.add_typer(jobs_app, name="jobs")
app.add_typer(train_app, name="train")
app.add_typer(sessions_app, name="sessions")
app.add_typer(outputs_app, name="outputs")


def main() -> None:
    try:
        from freeavatar_server.app.cli import add_server_commands
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("freeavatar_server"):
            raise
    else:
        add_server_commands(app)
    app()
