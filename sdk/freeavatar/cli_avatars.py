"""`freeavatar avatars ...`: register, list, show and delete avatars on a running server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from freeavatar.avatar import Avatar
from freeavatar.client import DEFAULT_ADDRESS, Client
from freeavatar.errors import FreeAvatarError, Unavailable
from freeavatar.rig import InvalidRigSpec, RigSpec, load_rig_spec

avatars_app = typer.Typer(help="Register, list, show and delete avatars.", no_args_is_help=True)
console = Console()

ServerOption = Annotated[
    str, typer.Option("--server", envvar="FREEAVATAR_SERVER", help="Server address, HOST:PORT.")
]
ApiKeyOption = Annotated[
    str | None, typer.Option(envvar="FREEAVATAR_API_KEY", help="API key, if the server wants one.")
]
TlsCaOption = Annotated[
    Path | None,
    typer.Option(envvar="FREEAVATAR_TLS_CA", help="PEM file to verify a TLS server against."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@contextmanager
def connect(server: str, api_key: str | None, tls_ca: Path | None) -> Iterator[Client]:
    """A client whose failures end the command with a one-line message and exit code 1."""
    try:
        with Client(server, api_key=api_key, root_certificates=tls_ca) as client:
            yield client
    except Unavailable as error:
        fail(f"cannot reach a FreeAvatar server at {server} ({error.message})")
    except FreeAvatarError as error:
        fail(str(error))


@avatars_app.command("list")
def list_avatars(
    server: ServerOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = None,
    tls_ca: TlsCaOption = None,
    as_json: JsonOption = False,
) -> None:
    """List registered avatars."""
    with connect(server, api_key, tls_ca) as client:
        avatars = client.list_avatars()
    if as_json:
        print(json.dumps([_avatar_dict(a) for a in avatars], indent=2))
        return
    table = Table("id", "name", "controls", "created")
    for avatar in avatars:
        table.add_row(
            avatar.id, avatar.name, str(len(avatar.spec.controls)), f"{avatar.created:%Y-%m-%d %H:%M}"
        )
    console.print(table)


@avatars_app.command()
def register(
    spec_file: Annotated[
        Path | None, typer.Argument(help="JSON rig spec: {name, controls: [{name, min, max, ...}]}")
    ] = None,
    arkit: Annotated[
        str | None, typer.Option(help="Instead of a file: an ARKit-52 rig with this name.")
    ] = None,
    server: ServerOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = None,
    tls_ca: TlsCaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register an avatar from a JSON rig spec (or --arkit NAME) and print its id."""
    if (spec_file is None) == (arkit is None):
        fail("give either a rig spec file or --arkit NAME", code=2)
    try:
        spec = load_rig_spec(spec_file) if spec_file is not None else RigSpec.arkit52(str(arkit))
    except InvalidRigSpec as error:
        fail(f"invalid rig spec: {error}", code=2)
    with connect(server, api_key, tls_ca) as client:
        avatar = client.register_avatar(spec)
    if as_json:
        print(json.dumps(_avatar_dict(avatar), indent=2))
    else:
        console.print(f"registered [bold]{avatar.name}[/] as {avatar.id}")


@avatars_app.command()
def show(
    avatar_id: str,
    server: ServerOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = None,
    tls_ca: TlsCaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one avatar and its controls."""
    with connect(server, api_key, tls_ca) as client:
        avatar = client.get_avatar(avatar_id)
    if as_json:
        print(json.dumps(_avatar_dict(avatar), indent=2))
        return
    console.print(f"[bold]{avatar.name}[/] {avatar.id}, created {avatar.created:%Y-%m-%d %H:%M}")
    table = Table("control", "min", "max", "default", "group", "ARKit", "mirror")
    for c in avatar.spec.controls:
        table.add_row(c.name, f"{c.min:g}", f"{c.max:g}", f"{c.default:g}", c.group, c.arkit_alias, c.mirror)
    console.print(table)


@avatars_app.command()
def delete(
    avatar_id: str,
    server: ServerOption = DEFAULT_ADDRESS,
    api_key: ApiKeyOption = None,
    tls_ca: TlsCaOption = None,
) -> None:
    """Delete an avatar."""
    with connect(server, api_key, tls_ca) as client:
        client.delete_avatar(avatar_id)
    console.print(f"deleted {avatar_id}")


def _avatar_dict(avatar: Avatar) -> dict[str, object]:
    return {
        "id": avatar.id,
        "created": avatar.created.isoformat(),
        "spec": avatar.spec.to_dict(),
        "render_sample_count": avatar.render_sample_count,
        "keyframe_count": avatar.keyframe_count,
    }


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
