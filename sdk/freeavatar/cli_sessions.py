"""`freeavatar sessions ...`: the live sessions engines subscribe to and actors stream into."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from freeavatar.cli_common import Printer, Remote, console, with_json, with_server

sessions_app = typer.Typer(help="Create, list and close live sessions.", no_args_is_help=True)


@sessions_app.command("create")
@with_json
@with_server
def create(
    remote: Remote,
    printer: Printer,
    name: Annotated[str, typer.Argument(help="A name to know it by.")] = "",
) -> None:
    """Create a session; prints its id and token (the token only now: keep it)."""
    with remote.connect() as client:
        session = client.create_session(name)
    data = {"id": session.id, "name": session.name, "token": session.token}
    printer.show(data, f"session {session.id}\ntoken   {session.token}", indent=None)


@sessions_app.command("list")
@with_json
@with_server
def list_sessions(remote: Remote, printer: Printer) -> None:
    """The server's live sessions, with their actors, subscribers and outputs."""
    with remote.connect() as client:
        sessions = client.list_sessions()
    rows = [
        {
            "id": s.id,
            "name": s.name,
            "actors": len(s.actors),
            "subscribers": s.subscriber_count,
            "outputs": len(s.outputs),
        }
        for s in sessions
    ]

    def table() -> Table:
        view = Table("id", "name", "actors", "subscribers", "outputs")
        for row in rows:
            view.add_row(*(str(value) for value in row.values()))
        return view

    printer.show(rows, table)


@sessions_app.command("close")
@with_server
def close(
    remote: Remote,
    session_id: Annotated[str, typer.Argument(help="The session.")],
    token: Annotated[str, typer.Option(help="The session token, on servers with API keys.")] = "",
) -> None:
    """Close a session: its streams and outputs end."""
    with remote.connect() as client:
        client.close_session(session_id, token=token)
    console.print(f"closed session {session_id}")
