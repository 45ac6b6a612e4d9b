"""Rig specs: the controls an avatar exposes, their validation, and their wire and file forms."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from freeavatar._proto import rig_pb2
from freeavatar.arkit import ARKIT_BLENDSHAPES, ARKIT_NAME_SET, arkit_group, arkit_mirror

MAX_CONTROLS = 1024
MAX_NAME_LENGTH = 128  # avatar and control names, groups and mirror partners
# Rig values travel as float32 (frames, samples): a range must fit it, and so must its span,
# which the server subtracts in float32 (max - min of -3e38..3e38 is inf there).
FLOAT32_MAX = 3.4028234663852886e38


class InvalidRigSpec(ValueError):
    """A rig spec that cannot be registered; the message names the control and the problem."""


@dataclass(frozen=True)
class RigControl:
    name: str
    min: float = 0.0
    max: float = 1.0
    default: float = 0.0
    group: str = ""
    arkit_alias: str = ""  # one of ARKit's 52 names, or ""
    mirror: str = ""  # name of the left/right partner control, or ""

    def to_proto(self) -> rig_pb2.RigControl:
        return rig_pb2.RigControl(
            name=self.name,
            min=self.min,
            max=self.max,
            default_value=self.default,
            group=self.group,
            arkit_alias=self.arkit_alias,
            mirror=self.mirror,
        )

    @classmethod
    def from_proto(cls, msg: rig_pb2.RigControl) -> RigControl:
        return cls(
            name=msg.name,
            min=msg.min,
            max=msg.max,
            default=msg.default_value,
            group=msg.group,
            arkit_alias=msg.arkit_alias,
            mirror=msg.mirror,
        )


@dataclass(frozen=True)
class RigSpec:
    name: str
    controls: tuple[RigControl, ...] = field(default_factory=tuple)

    @property
    def control_names(self) -> list[str]:
        return [c.name for c in self.controls]

    @property
    def defaults(self) -> list[float]:
        return [c.default for c in self.controls]

    def validate(self) -> None:
        """Raise InvalidRigSpec naming the first problem found."""
        if not self.name.strip():
            raise InvalidRigSpec("rig spec has an empty name")
        if len(self.name) > MAX_NAME_LENGTH:
            raise InvalidRigSpec(f"rig spec name is longer than {MAX_NAME_LENGTH} characters")
        if not self.controls:
            raise InvalidRigSpec(f"rig spec {self.name!r} has no controls")
        if len(self.controls) > MAX_CONTROLS:
            raise InvalidRigSpec(
                f"rig spec {self.name!r} has {len(self.controls)} controls; at most {MAX_CONTROLS}"
            )
        names = set()
        for index, control in enumerate(self.controls):
            _validate_control(index, control)
            if control.name in names:
                raise InvalidRigSpec(f"control {control.name!r} appears more than once")
            names.add(control.name)
        for control in self.controls:
            if control.mirror and control.mirror not in names:
                raise InvalidRigSpec(
                    f"control {control.name!r}: mirror partner {control.mirror!r} is not a control"
                )
            if control.mirror == control.name:
                raise InvalidRigSpec(f"control {control.name!r} is its own mirror partner")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RigSpec:
        if not isinstance(data, Mapping):
            raise InvalidRigSpec("a rig spec must be a mapping with 'name' and 'controls'")
        unknown = set(data) - {"name", "controls"}
        if unknown:
            raise InvalidRigSpec(f"unknown rig spec fields: {', '.join(sorted(unknown))}")
        controls = data.get("controls", [])
        if not isinstance(controls, Sequence) or isinstance(controls, str):
            raise InvalidRigSpec("'controls' must be a list")
        return cls(
            name=str(data.get("name", "")),
            controls=tuple(_control_from_dict(i, c) for i, c in enumerate(controls)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_proto(self) -> rig_pb2.RigSpec:
        return rig_pb2.RigSpec(name=self.name, controls=[c.to_proto() for c in self.controls])

    @classmethod
    def from_proto(cls, msg: rig_pb2.RigSpec) -> RigSpec:
        return cls(name=msg.name, controls=tuple(RigControl.from_proto(c) for c in msg.controls))

    @classmethod
    def arkit52(cls, name: str = "arkit52") -> RigSpec:
        """A rig whose 52 controls are ARKit's blendshapes, each in [0, 1] and aliased to itself."""
        return cls(
            name=name,
            controls=tuple(
                RigControl(
                    name=shape,
                    group=arkit_group(shape),
                    arkit_alias=shape,
                    mirror=arkit_mirror(shape),
                )
                for shape in ARKIT_BLENDSHAPES
            ),
        )


RigSpecLike = RigSpec | Mapping[str, Any] | str | os.PathLike[str]


def load_rig_spec(spec: RigSpecLike) -> RigSpec:
    """A RigSpec from the dataclass itself, a dict, or the path of a JSON file; validated."""
    if isinstance(spec, RigSpec):
        result = spec
    elif isinstance(spec, Mapping):
        result = RigSpec.from_dict(spec)
    elif isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise InvalidRigSpec(f"cannot read rig spec file {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise InvalidRigSpec(f"rig spec file {path} is not valid JSON: {exc}") from exc
        result = RigSpec.from_dict(data)
    else:
        raise TypeError(f"expected a RigSpec, dict or JSON path, got {type(spec).__name__}")
    result.validate()
    return result


def _control_from_dict(index: int, data: Any) -> RigControl:
    if not isinstance(data, Mapping):
        raise InvalidRigSpec(f"control #{index} must be a mapping, got {type(data).__name__}")
    known = {f for f in RigControl.__dataclass_fields__}
    unknown = set(data) - known
    if unknown:
        raise InvalidRigSpec(f"control #{index}: unknown fields {', '.join(sorted(unknown))}")
    if "name" not in data:
        raise InvalidRigSpec(f"control #{index} has no name")
    try:
        return RigControl(
            name=str(data["name"]),
            min=float(data.get("min", 0.0)),
            max=float(data.get("max", 1.0)),
            default=float(data.get("default", data.get("min", 0.0))),
            group=str(data.get("group", "")),
            arkit_alias=str(data.get("arkit_alias", "")),
            mirror=str(data.get("mirror", "")),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRigSpec(f"control {data['name']!r}: {exc}") from exc


def _validate_control(index: int, control: RigControl) -> None:
    if not control.name.strip():
        raise InvalidRigSpec(f"control #{index} has an empty name")
    if len(control.name) > MAX_NAME_LENGTH:
        raise InvalidRigSpec(f"control #{index}: name longer than {MAX_NAME_LENGTH} characters")
    label = f"control {control.name!r}"
    for attr in ("group", "mirror"):
        if len(getattr(control, attr)) > MAX_NAME_LENGTH:
            raise InvalidRigSpec(f"{label}: {attr} is longer than {MAX_NAME_LENGTH} characters")
    for attr in ("min", "max", "default"):
        if not math.isfinite(getattr(control, attr)):
            raise InvalidRigSpec(f"{label}: {attr} is not a finite number")
        if abs(getattr(control, attr)) > FLOAT32_MAX:
            raise InvalidRigSpec(f"{label}: {attr} {getattr(control, attr):g} does not fit a float32")
    if control.min >= control.max:
        raise InvalidRigSpec(f"{label}: min {control.min:g} is not below max {control.max:g}")
    if control.max - control.min > FLOAT32_MAX:
        raise InvalidRigSpec(
            f"{label}: the range [{control.min:g}, {control.max:g}] is wider than a float32 holds"
        )
    if not control.min <= control.default <= control.max:
        raise InvalidRigSpec(
            f"{label}: default {control.default:g} is outside [{control.min:g}, {control.max:g}]"
        )
    if control.arkit_alias and control.arkit_alias not in ARKIT_NAME_SET:
        raise InvalidRigSpec(
            f"{label}: arkit_alias {control.arkit_alias!r} is not one of ARKit's 52 blendshape names"
        )
