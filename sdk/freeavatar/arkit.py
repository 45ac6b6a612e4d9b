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


# Tools spell the same shape differently: ARKit and Live Link write eyeBlinkLeft, VRM "perfect
# sync" EyeBlinkLeft, others eyeBlink_L, Eye_Blink_L or blendShape1.eyeBlinkLeft. This is the one
# place (with its C# twin, ArkitNames.Canonical in unity_client, held to it by a test) that reads
# them all.
_BY_KEY = {name.lower(): name for name in ARKIT_BLENDSHAPES}
_SEPARATORS = str.maketrans("", "", "_- ")


def canonical_arkit_name(name: str) -> str:
    """ARKit's spelling of `name` (eyeBlinkLeft for eyeBlink_L, EyeBlinkLeft, eye_blink_left,
    Face.eyeBlinkL), or "" if it is not one of the 52 shapes."""
    key = name.rsplit(".", 1)[-1].rsplit(":", 1)[-1].translate(_SEPARATORS).lower()
    if key in _BY_KEY:
        return _BY_KEY[key]
    # A one-letter side suffix, tried only after an exact match: mouthRollUpper ends in "r" too.
    side = {"l": "left", "r": "right"}.get(key[-1:])
    return _BY_KEY.get(key[:-1] + side, "") if side else ""


def perfect_sync_name(name: str) -> str:
    """The VRM "perfect sync" clip name of an ARKit shape: its name with a capital first letter."""
    return name[:1].upper() + name[1:]
