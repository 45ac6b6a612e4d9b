"""VMC protocol output: each rig frame as VMC OSC messages over UDP, as VSeeFace, Warudo and VNyan
(the VMC "Marionette") expect them from a tracker on port 39539.

Per frame, in order:

    /VMC/Ext/T          (f) seconds since the output started
    /VMC/Ext/Bone/Pos   (s "Head", f px py pz, f qx qy qz qw) the head's local rotation in
                        Unity's frame (left-handed, y up, the avatar facing +z); position 0
    /VMC/Ext/Blend/Val  (s name, f value) per blendshape, under the output's name table
    /VMC/Ext/Blend/Apply
    /VMC/Ext/OK         (i loaded 1, i calibration state 3 = calibrated, i calibration mode 0,
                        i tracking status: 1 while a face is found)

packed into OSC bundles that each fit a 1200-byte datagram, so no frame needs IP fragmentation
(a lost fragment loses a whole datagram). Receivers collect Blend/Val until Apply, across
datagrams.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from freeavatar._proto import rig_pb2, stream_pb2
from freeavatar.arkit import ARKIT_BLENDSHAPES, perfect_sync_name
from freeavatar.rig import RigSpec
from freeavatar_server.live.errors import NotReady
from freeavatar_server.transport.engines.arkit_face import SHAPE_INDEX, ArkitFace

DEFAULT_PORT = 39539
MAX_DATAGRAM = 1200  # bytes: under the 1280-byte minimum IPv6 MTU, so never fragmented
_BUNDLE_HEADER = 16  # "#bundle\0" and the time tag

Names = stream_pb2.VmcBlendNames

# VRM presets are expressions, not ARKit shapes: each is the mean of the ARKit shapes below, an
# approximation for avatars made without perfect-sync clips. Blinks are split apart (below) so
# that Blink and Blink_L never both close the same eye.
VRM0_PRESETS: dict[str, tuple[str, ...]] = {
    "A": ("jawOpen",),
    "I": ("mouthStretchLeft", "mouthStretchRight"),
    "U": ("mouthPucker",),
    "E": ("mouthLowerDownLeft", "mouthLowerDownRight"),
    "O": ("mouthFunnel",),
    "Joy": ("mouthSmileLeft", "mouthSmileRight"),
    "Angry": ("browDownLeft", "browDownRight"),
    "Sorrow": ("mouthFrownLeft", "mouthFrownRight"),
    "LookUp": ("eyeLookUpLeft", "eyeLookUpRight"),
    "LookDown": ("eyeLookDownLeft", "eyeLookDownRight"),
    "LookLeft": ("eyeLookOutLeft", "eyeLookInRight"),  # the avatar's left
    "LookRight": ("eyeLookInLeft", "eyeLookOutRight"),
}
VRM0_BLINKS = ("Blink", "Blink_L", "Blink_R")
VRM1_PRESETS: dict[str, tuple[str, ...]] = {
    "aa": VRM0_PRESETS["A"],
    "ih": VRM0_PRESETS["I"],
    "ou": VRM0_PRESETS["U"],
    "ee": VRM0_PRESETS["E"],
    "oh": VRM0_PRESETS["O"],
    "happy": VRM0_PRESETS["Joy"],
    "angry": VRM0_PRESETS["Angry"],
    "sad": VRM0_PRESETS["Sorrow"],
    "surprised": ("eyeWideLeft", "eyeWideRight"),
    "lookUp": VRM0_PRESETS["LookUp"],
    "lookDown": VRM0_PRESETS["LookDown"],
    "lookLeft": VRM0_PRESETS["LookLeft"],
    "lookRight": VRM0_PRESETS["LookRight"],
}
VRM1_BLINKS = ("blink", "blinkLeft", "blinkRight")


def head_quaternion(yaw: float, pitch: float, roll: float) -> tuple[float, float, float, float]:
    """A rig frame's head pose (degrees; +yaw towards the image's right, +pitch up, +roll
    clockwise in the image) as a Unity rotation (x, y, z, w) that turns the avatar's head the
    way the actor's turns: to its left when they turn to their left.

    Unity is left-handed with the avatar facing +z, so turning left and looking up are negative
    turns about y and x; Quaternion.Euler applies z, then x, then y."""
    x, y, z = (math.radians(a) / 2 for a in (-pitch, -yaw, roll))
    qx = (math.sin(x), 0.0, 0.0, math.cos(x))
    qy = (0.0, math.sin(y), 0.0, math.cos(y))
    qz = (0.0, 0.0, math.sin(z), math.cos(z))
    return _multiply(_multiply(qy, qx), qz)


def _multiply(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


@dataclass(frozen=True)
class BlendTable:
    """Which VMC blend names a rig's frames become, and how their values are made."""

    names: int
    spec: RigSpec
    face: ArkitFace

    @classmethod
    def of(cls, spec: RigSpec, names: int) -> BlendTable:
        face = ArkitFace.of(spec)
        if names == Names.VMC_BLEND_NAMES_UNSPECIFIED:
            names = Names.VMC_BLEND_NAMES_RIG if face.empty else Names.VMC_BLEND_NAMES_PERFECT_SYNC
        if names != Names.VMC_BLEND_NAMES_RIG and face.empty:
            raise NoArkitForVmc(spec, names)
        return cls(names, spec, face)

    def values(self, values: np.ndarray) -> list[tuple[str, float]]:
        """(blend name, value) for one frame's control values."""
        if self.names == Names.VMC_BLEND_NAMES_RIG:
            return list(zip(self.spec.control_names, values.tolist(), strict=True))
        shapes = self.face.coefficients(values)
        if self.names == Names.VMC_BLEND_NAMES_PERFECT_SYNC:
            return [
                (perfect_sync_name(ARKIT_BLENDSHAPES[i]), float(shapes[i]))
                for i in self.face.shapes
            ]
        vrm0 = self.names == Names.VMC_BLEND_NAMES_VRM0
        presets, blinks = (VRM0_PRESETS, VRM0_BLINKS) if vrm0 else (VRM1_PRESETS, VRM1_BLINKS)
        driven = set(self.face.shape_names)
        out = [
            (preset, float(np.mean([shapes[SHAPE_INDEX[s]] for s in sources])))
            for preset, sources in presets.items()
            if driven.intersection(sources)
        ]
        if driven.intersection(("eyeBlinkLeft", "eyeBlinkRight")):
            left, right = (
                float(shapes[SHAPE_INDEX["eyeBlinkLeft"]]),
                float(shapes[SHAPE_INDEX["eyeBlinkRight"]]),
            )
            both = min(left, right)
            out += [(blinks[0], both), (blinks[1], left - both), (blinks[2], right - both)]
        return out


class NoArkitForVmc(NotReady):
    def __init__(self, spec: RigSpec, names: int) -> None:
        super().__init__(
            f"avatar {spec.name!r} has no controls with ARKit aliases, which the VMC name table "
            f"{Names.Name(names)} is made from; use VMC_BLEND_NAMES_RIG to send its own control names"
        )


@dataclass
class VmcEncoder:
    """Turns one avatar's rig frames into VMC datagrams."""

    table: BlendTable
    started: float = field(default_factory=time.monotonic)

    def encode(self, frame: rig_pb2.RigFrame, fps: float) -> list[bytes]:
        pose = frame.head_pose
        messages = [
            build_msg("/VMC/Ext/T", time.monotonic() - self.started),
            build_msg("/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.0, 0.0, *head_quaternion(pose.yaw, pose.pitch, pose.roll)]),
            *(build_msg("/VMC/Ext/Blend/Val", [name, value]) for name, value in self.table.values(np.asarray(frame.values, np.float32))),
            build_msg("/VMC/Ext/Blend/Apply"),
            build_msg("/VMC/Ext/OK", [1, 3, 0, int(frame.face_present)]),
        ]  # fmt: skip
        return bundles(messages)


def bundles(messages: list[OscMessage], limit: int = MAX_DATAGRAM) -> list[bytes]:
    """The messages, in order, in as few bundles of at most `limit` bytes as they fit."""
    out: list[bytes] = []
    builder, size = OscBundleBuilder(IMMEDIATELY), _BUNDLE_HEADER
    for message in messages:
        if size + 4 + message.size > limit and size > _BUNDLE_HEADER:
            out.append(builder.build().dgram)
            builder, size = OscBundleBuilder(IMMEDIATELY), _BUNDLE_HEADER
        builder.add_content(message)
        size += 4 + message.size
    out.append(builder.build().dgram)
    return out
