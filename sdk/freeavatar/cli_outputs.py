"""`freeavatar outputs ...`: push a session's avatar to Unreal (Live Link Face) or a VMC app."""

from __future__ import annotations

from dataclasses import asdict
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from freeavatar.cli_common import Printer, Remote, console, fail, with_json, with_server
from freeavatar.cli_jobs import resolve_avatar
from freeavatar.outputs import EngineOutput, OutputProtocol, VmcNames

outputs_app = typer.Typer(
    help="Send a session's avatar frames to Unreal (Live Link Face) or a VMC app over UDP.",
    no_args_is_help=True,
)


class VmcNamesChoice(StrEnum):
    auto = "auto"
    perfect_sync = "perfect-sync"
    vrm0 = "vrm0"
    vrm1 = "vrm1"
    rig = "rig"

    @property
    def names(self) -> VmcNames:
        return VmcNames[self.name.upper()]


LiveLinkOption = Annotated[
    list[str] | None,
    typer.Option(
        "--livelink",
        metavar="HOST:PORT",
        help="Send Live Link Face packets here (Unreal; port 11111 if left out). Repeatable.",
    ),
]
VmcOption = Annotated[
    list[str] | None,
    typer.Option(
        "--vmc",
        metavar="HOST:PORT",
        help="Send VMC protocol messages here (VSeeFace, Warudo, VNyan; port 39539 if left out).",
    ),
]
VmcNamesOption = Annotated[
    VmcNamesChoice,
    typer.Option(help="VMC blendshape names: ARKit perfect sync, VRM 0/1 presets, or the rig's."),
]
SubjectOption = Annotated[
    str, typer.Option("--subject", help="Live Link subject name; default: the avatar's name.")
]


def output_targets(
    livelink: list[str] | None, vmc: list[str] | None
) -> list[tuple[OutputProtocol, str]]:
    """(protocol, HOST:PORT) for each --livelink and --vmc flag (`stream` and `outputs add`)."""
    return [(OutputProtocol.LIVE_LINK_FACE, t) for t in livelink or []] + [
        (OutputProtocol.VMC, t) for t in vmc or []
    ]


def describe(output: EngineOutput) -> str:
    protocol = "Live Link Face" if output.protocol is OutputProtocol.LIVE_LINK_FACE else "VMC"
    detail = (
        f"subject {output.subject_name!r}" if output.subject_name else output.vmc_names.name.lower()
    )
    return f"{protocol} to {output.host}:{output.port} ({detail}), output {output.id}"


@outputs_app.command("add")
@with_json
@with_server
def add(
    remote: Remote,
    printer: Printer,
    session_id: Annotated[str, typer.Argument(help="The session whose frames to send.")],
    avatar: Annotated[str, typer.Option(help="Avatar id or name.")],
    livelink: LiveLinkOption = None,
    vmc: VmcOption = None,
    vmc_names: VmcNamesOption = VmcNamesChoice.auto,
    subject: SubjectOption = "",
    actor: Annotated[str, typer.Option(help="Only this actor's frames (an actor id).")] = "",
    token: Annotated[str, typer.Option(help="The session token, on servers with API keys.")] = "",
) -> None:
    """Start sending an avatar's frames; they flow while the session has frames for it."""
    targets = output_targets(livelink, vmc)
    if not targets:
        fail("give --livelink HOST:PORT or --vmc HOST:PORT (or both)", code=2)
    with remote.connect() as client:
        avatar_id = resolve_avatar(client, avatar).id
        outputs = [
            client.add_output(
                session_id,
                avatar_id,
                protocol,
                target,
                subject_name=subject,
                actor_id=actor,
                vmc_names=vmc_names.names,
                token=token,
            )  # fmt: skip
            for protocol, target in targets
        ]
    printer.show([_output_dict(o) for o in outputs], "\n".join(f"sending {describe(o)}" for o in outputs))


@outputs_app.command("list")
@with_json
@with_server
def list_outputs(
    remote: Remote,
    printer: Printer,
    session_id: Annotated[str, typer.Argument(help="The session.")],
) -> None:
    """A session's outputs and their counters."""
    with remote.connect() as client:
        outputs = client.list_outputs(session_id)

    def table() -> Table:
        view = Table("id", "protocol", "target", "avatar", "sent", "errors", "skipped", "last error")
        for o in outputs:
            view.add_row(
                o.id, o.protocol.name, f"{o.host}:{o.port}", o.avatar_id, str(o.packets_sent),
                str(o.send_errors), str(o.frames_skipped), o.last_error,
            )  # fmt: skip
        return view

    printer.show([_output_dict(o) for o in outputs], table)


@outputs_app.command("remove")
@with_server
def remove(
    remote: Remote,
    session_id: Annotated[str, typer.Argument(help="The session.")],
    output_id: Annotated[str, typer.Argument(help="The output, as `outputs list` shows it.")],
    token: Annotated[str, typer.Option(help="The session token, on servers with API keys.")] = "",
) -> None:
    """Stop an output."""
    with remote.connect() as client:
        client.remove_output(session_id, output_id, token=token)
    console.print(f"removed output {output_id}")


def _output_dict(output: EngineOutput) -> dict:
    return asdict(output) | {"protocol": output.protocol.name, "vmc_names": output.vmc_names.name}
