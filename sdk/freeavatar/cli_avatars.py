"""`freeavatar avatars ...`: register, list, show and delete avatars on a running server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from freeavatar.avatar import Avatar
from freeavatar.cli_common import Printer, Remote, console, fail, with_json, with_server
from freeavatar.rig import InvalidRigSpec, RigSpec, load_rig_spec

avatars_app = typer.Typer(help="Register, list, show and delete avatars.", no_args_is_help=True)


@avatars_app.command("list")
@with_json
@with_server
def list_avatars(remote: Remote, printer: Printer) -> None:
    """List registered avatars."""
    with remote.connect() as client:
        avatars = client.list_avatars()

    def table() -> Table:
        rows = Table("id", "name", "controls", "created")
        for avatar in avatars:
            created = f"{avatar.created:%Y-%m-%d %H:%M}"
            rows.add_row(avatar.id, avatar.name, str(len(avatar.spec.controls)), created)
        return rows

    printer.show([_avatar_dict(a) for a in avatars], table)


@avatars_app.command()
@with_json
@with_server
def register(
    remote: Remote,
    printer: Printer,
    spec_file: Annotated[
        Path | None, typer.Argument(help="JSON rig spec: {name, controls: [{name, min, max, ...}]}")
    ] = None,
    arkit: Annotated[
        str | None, typer.Option(help="Instead of a file: an ARKit-52 rig with this name.")
    ] = None,
) -> None:
    """Register an avatar from a JSON rig spec (or --arkit NAME) and print its id."""
    if (spec_file is None) == (arkit is None):
        fail("give either a rig spec file or --arkit NAME", code=2)
    try:
        spec = load_rig_spec(spec_file) if spec_file is not None else RigSpec.arkit52(str(arkit))
    except InvalidRigSpec as error:
        fail(f"invalid rig spec: {error}", code=2)
    with remote.connect() as client:
        avatar = client.register_avatar(spec)
    printer.show(_avatar_dict(avatar), f"registered [bold]{avatar.name}[/] as {avatar.id}")


@avatars_app.command()
@with_json
@with_server
def show(
    remote: Remote,
    printer: Printer,
    avatar_id: Annotated[str, typer.Argument(help="The avatar's id.")],
) -> None:
    """Show one avatar and its controls."""
    with remote.connect() as client:
        avatar = client.get_avatar(avatar_id)

    def table() -> Table:
        console.print(f"[bold]{avatar.name}[/] {avatar.id}, created {avatar.created:%Y-%m-%d %H:%M}")
        rows = Table("control", "min", "max", "default", "group", "ARKit", "mirror")
        for c in avatar.spec.controls:
            rows.add_row(c.name, f"{c.min:g}", f"{c.max:g}", f"{c.default:g}", c.group, c.arkit_alias, c.mirror)
        return rows

    printer.show(_avatar_dict(avatar), table)


@avatars_app.command()
@with_server
def delete(
    remote: Remote,
    avatar_id: Annotated[str, typer.Argument(help="The avatar's id.")],
) -> None:
    """Delete an avatar."""
    with remote.connect() as client:
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
