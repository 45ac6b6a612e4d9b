"""Unreal Live Link Face output: each rig frame as the UDP packet the Live Link Face iPhone app
sends, so Unreal's Live Link Face source (and MetaHumans through it) takes it with no plugin.

The packet, in network byte order, as public decoders (pylivelinkface, LLV) read it:

    uint8    version (6)
    int32    length, then the device id (UTF-8): a UUID string, 36 characters
    int32    length, then the subject name (UTF-8): the Live Link subject Unreal lists
    int32    frame number  \\  the frame's timecode, at `numerator / denominator` frames per
    float32  sub-frame      |  second: here, frames since midnight UTC of the source frame's
    int32    numerator      |  capture time at the source's own frame rate
    int32    denominator   /
    uint8    value count (61)
    61 x float32: ARKit's 52 shapes in Unreal's EARFaceBlendShape order (0..1), then head yaw,
             pitch and roll, then the left eye's and the right eye's yaw, pitch and roll (radians)

Eye rotations are sent as 0: the rig carries the eyes as the eyeLook* shapes, which Unreal's
face animation reads on their own.
"""

from __future__ import annotations

import math
import struct
import uuid
from dataclasses import dataclass, field

import numpy as np

from freeavatar._proto import rig_pb2
from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar.rig import RigSpec
from freeavatar_server.live.errors import NotReady
from freeavatar_server.transport.engines.arkit_face import ArkitFace

DEFAULT_PORT = 11111
PACKET_VERSION = 6
VALUE_COUNT = len(ARKIT_BLENDSHAPES) + 9  # 61: the shapes, the head, two eyes
DAY_US = 86_400_000_000


class NoArkitControls(NotReady):
    """A rig with nothing for Live Link Face to carry."""

    def __init__(self, spec: RigSpec) -> None:
        super().__init__(
            f"avatar {spec.name!r} has no controls with ARKit aliases: Live Link Face carries "
            "ARKit's 52 blendshapes only. Give its controls an arkit_alias (or ARKit names), "
            "or use the VMC output, which can send the rig's own control names"
        )


@dataclass(frozen=True)
class FrameTime:
    """Unreal's FQualifiedFrameTime: a frame number and fraction at a frame rate."""

    frame: int
    sub_frame: float
    numerator: int
    denominator: int = 1

    @classmethod
    def at(cls, time_us: int, fps: int) -> FrameTime:
        """The timecode of a moment (microseconds since the epoch) at `fps`: frames since
        midnight UTC, as the iPhone app stamps its frames."""
        frames = (time_us % DAY_US) * fps / 1e6
        whole = math.floor(frames)
        return cls(whole, frames - whole, fps)


def encode_packet(
    device_id: str,
    subject: str,
    time: FrameTime,
    shapes: np.ndarray,
    head_ypr_radians: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> bytes:
    """One Live Link Face packet; `shapes` are ARKit's 52 coefficients in Unreal's order."""
    if len(shapes) != len(ARKIT_BLENDSHAPES):
        raise ValueError(
            f"Live Link Face carries {len(ARKIT_BLENDSHAPES)} shapes, got {len(shapes)}"
        )
    device, name = device_id.encode(), subject.encode()
    values = [*map(float, shapes), *head_ypr_radians, *(0.0,) * 6]
    return b"".join(
        (
            struct.pack("!Bi", PACKET_VERSION, len(device)),
            device,
            struct.pack("!i", len(name)),
            name,
            struct.pack("!ifii", time.frame, time.sub_frame, time.numerator, time.denominator),
            struct.pack(f"!B{VALUE_COUNT}f", VALUE_COUNT, *values),
        )
    )


@dataclass
class LiveLinkEncoder:
    """Turns one avatar's rig frames into Live Link Face packets for one subject."""

    spec: RigSpec
    subject: str
    face: ArkitFace = field(init=False)
    device_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # 36 characters

    def __post_init__(self) -> None:
        self.face = ArkitFace.of(self.spec)
        if self.face.empty:
            raise NoArkitControls(self.spec)

    def encode(self, frame: rig_pb2.RigFrame, fps: float) -> list[bytes]:
        values = np.asarray(frame.values, np.float32)
        stamp = frame.capture_time_us or frame.emit_time_us
        time = FrameTime.at(stamp, min(max(round(fps), 1), 240))
        pose = frame.head_pose
        head = (math.radians(pose.yaw), math.radians(pose.pitch), math.radians(pose.roll))
        return [
            encode_packet(self.device_id, self.subject, time, self.face.coefficients(values), head)
        ]
