"""`freeavatar sessions ...`: the live sessions engines subscribe to and actors stream into."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from freeavatar.cli_avatars import (
    ApiKeyOption,
    JsonOption,
    ServerOption,
    TlsCaOption,
    connect,
    console,
)
from freeavatar.client import DEFAULT_ADDRESS

sessions_app = typer.Typer(help="Create, list and close live sessions.", no_args_is_help=True)


@sessions_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name to know it by.")] = "",
    server: ServerOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = None,
    tls_ca: TlsCaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a session; prints its id and token (the token only now: keep it)."""
    with connect(server, api_key, tls_ca) as client:
        session = client.create_session(name)
    if as_json:
        print(json.dumps({"id": session.id, "name": session.name, "token": session.token}))
        return
    console.print(f"session {session.id}\ntoken   {session.token}")


@sessions_app.command("list")
def list_sessions(
    server: ServerOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = None,
    tls_ca: TlsCaOption = None,
    as_json: JsonOption = False,
) -> None:
    """The server's live sessions, with their actors, subscribers and outputs."""
    with connect(server, api_key, tls_ca) as client:
        sessions = client.list_sessions()
    if as_json:
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
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "name", "actors", "subscribers", "outputs")
    for s in sessions:
        table.add_row(
            s.id, s.name, str(len(s.actors)), str(s.subscriber_count), str(len(s.outputs))
        )
    console.print(table)


@sessions_app.command("close")
def close(
    session_id: Annotated[str, typer.Argument(help="The session.")],
    server: ServerOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = None,
    tls_ca: TlsCaOption = None,
) -> None:
    """Close a session: its streams and outputs end."""
    with connect(server, api_key, tls_ca) as client:
        client.close_session(session_id)
    console.print(f"closed session {session_id}")
