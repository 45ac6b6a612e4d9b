"""The `freeavatar` command, assembled in this one place: the SDK's client commands, plus the
server's commands when the [server] extra is installed (`freeavatar_server.app.cli.COMMANDS`
says which group each of those joins). Every group is mounted once and every command has one
path; old spellings stay as hidden commands for a release (`freeavatar encoder train | eval`)."""

from __future__ import annotations

import typer

from freeavatar.cli_avatars import avatars_app
from freeavatar.cli_jobs import jobs_app, train_app
from freeavatar.cli_outputs import outputs_app
from freeavatar.cli_sessions import sessions_app

HELP = "FreeAvatar: drive game-engine avatars from an actor's camera."
# Group name ("" is the top level) -> the SDK's commands in it.
CLIENT_COMMANDS: dict[str, typer.Typer] = {
    "avatars": avatars_app,
    "sessions": sessions_app,
    "outputs": outputs_app,
    "jobs": jobs_app,
    "train": train_app,
}
# The order `freeavatar --help` lists the groups in (any other group follows).
ORDER = ("", "avatars", "sessions", "outputs", "jobs", "train", "eval", "bench", "synth", "encoder")


def server_commands() -> dict[str, typer.Typer]:
    """The server's commands by group; none without the [server] extra."""
    try:
        from freeavatar_server.app.cli import COMMANDS  # lazy: the [server] extra is optional
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("freeavatar_server"):
            raise
        return {}
    return COMMANDS


def build_app(with_server: bool = True) -> typer.Typer:
    """A fresh `freeavatar` command tree: each group a new typer that the SDK's and the server's
    commands for it are merged into, mounted once."""
    parts: dict[str, list[typer.Typer]] = {}
    for name, commands in [*CLIENT_COMMANDS.items(), *(server_commands() if with_server else {}).items()]:
        parts.setdefault(name, []).append(commands)
    app = typer.Typer(
        help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )
    for name in sorted(parts, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        if not name:
            for commands in parts[name]:
                app.add_typer(commands)
            continue
        helps = [c.info.help for c in parts[name] if isinstance(c.info.help, str)]
        group_help = helps[-1] if helps else None  # the server's says more, when it has one
        group = typer.Typer(help=group_help, no_args_is_help=True)
        for commands in parts[name]:
            group.add_typer(commands)
        app.add_typer(group, name=name)
    return app


app = build_app()


def main() -> None:
    app()
