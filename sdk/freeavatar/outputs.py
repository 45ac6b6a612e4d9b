"""Engine outputs at the SDK boundary: the server pushing one avatar's frames over UDP to Unreal
(Live Link Face) or a VMC app (VSeeFace, Warudo, VNyan)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from freeavatar._proto import stream_pb2


class OutputProtocol(Enum):
    LIVE_LINK_FACE = stream_pb2.OUTPUT_PROTOCOL_LIVE_LINK_FACE  # Unreal, UDP 11111 by default
    VMC = stream_pb2.OUTPUT_PROTOCOL_VMC  # VMC protocol (OSC), UDP 39539 by default


class VmcNames(Enum):
    """The blendshape names a VMC output sends."""

    AUTO = stream_pb2.VMC_BLEND_NAMES_UNSPECIFIED  # PERFECT_SYNC with ARKit aliases, else RIG
    PERFECT_SYNC = stream_pb2.VMC_BLEND_NAMES_PERFECT_SYNC  # EyeBlinkLeft, JawOpen, ... (52)
    VRM0 = stream_pb2.VMC_BLEND_NAMES_VRM0  # A, I, U, E, O, Blink, Blink_L, Joy, ...
    VRM1 = stream_pb2.VMC_BLEND_NAMES_VRM1  # aa, ih, ou, ee, oh, blink, blinkLeft, happy, ...
    RIG = stream_pb2.VMC_BLEND_NAMES_RIG  # the rig's own control names and values


@dataclass(frozen=True)
class EngineOutput:
    id: str
    session_id: str
    avatar_id: str
    protocol: OutputProtocol
    host: str
    port: int
    subject_name: str = ""  # Live Link subject
    actor_id: str = ""  # "": whichever actor drives the avatar
    vmc_names: VmcNames = VmcNames.AUTO
    packets_sent: int = 0
    send_errors: int = 0  # datagrams the network refused (nothing listening, unreachable)
    last_error: str = ""
    frames_skipped: int = 0  # newer frames came first, or faster than the source

    @classmethod
    def from_proto(cls, msg: stream_pb2.EngineOutput) -> EngineOutput:
        return cls(
            id=msg.id,
            session_id=msg.session_id,
            avatar_id=msg.avatar_id,
            protocol=OutputProtocol(msg.protocol),
            host=msg.host,
            port=msg.port,
            subject_name=msg.subject_name,
            actor_id=msg.actor_id,
            vmc_names=VmcNames(msg.vmc_blend_names),
            packets_sent=msg.packets_sent,
            send_errors=msg.send_errors,
            last_error=msg.last_error,
            frames_skipped=msg.frames_skipped,
        )


def parse_target(target: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or HOST (port 0: the protocol's default) -> (host, port)."""
    target = target.strip()
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{target!r} is not [IPv6]:PORT")
        port = rest[1:]
    elif target.count(":") == 1:
        host, port = target.split(":")
    else:  # a bare host, or a bare IPv6 address
        host, port = target, ""
    if not host:
        raise ValueError(f"{target!r} has no host")
    if not port:
        return host, 0
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{target!r}: port {port!r} is not in 1..65535")
    return host, int(port)
