"""ARKit's 52 face blendshape names, in Unreal's EARFaceBlendShape order (the Live Link Face order)."""

from __future__ import annotations

ARKIT_BLENDSHAPES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)  # fmt: skip

ARKIT_NAME_SET = frozenset(ARKIT_BLENDSHAPES)


def arkit_group(name: str) -> str:
    """The face region of an ARKit name: "eye", "jaw", "mouth", "brow", "cheek", "nose", "tongue"."""
    for prefix in ("eye", "jaw", "mouth", "brow", "cheek", "nose", "tongue"):
        if name.startswith(prefix):
            return prefix
    raise ValueError(f"not an ARKit blendshape name: {name!r}")


def arkit_mirror(name: str) -> str:
    """The left/right partner of an ARKit name, or "" for a central shape."""
    for side, other in (("Left", "Right"), ("Right", "Left")):
        if name.endswith(side):
            return name[: -len(side)] + other
    return ""
