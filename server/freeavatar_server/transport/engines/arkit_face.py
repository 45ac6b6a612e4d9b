"""A rig's ARKit face: which of its controls drive which of ARKit's 52 shapes, on ARKit's 0..1.

Live Link Face and VMC "perfect sync" both speak ARKit. A control takes part through its
`arkit_alias`, or, without one, through a name that is an ARKit name in some tool's spelling
(`canonical_arkit_name`). Its value is mapped from the control's [min, max] onto 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freeavatar.arkit import ARKIT_BLENDSHAPES, canonical_arkit_name
from freeavatar.rig import RigSpec

SHAPE_INDEX = {name: i for i, name in enumerate(ARKIT_BLENDSHAPES)}


@dataclass(frozen=True)
class ArkitFace:
    controls: np.ndarray  # indices into a frame's values
    shapes: np.ndarray  # the ARKit shape each of those drives, indices into ARKIT_BLENDSHAPES
    low: np.ndarray  # the controls' min
    span: np.ndarray  # the controls' max - min

    @classmethod
    def of(cls, spec: RigSpec) -> ArkitFace:
        controls: list[int] = []
        shapes: list[int] = []
        for i, control in enumerate(spec.controls):
            shape = control.arkit_alias or canonical_arkit_name(control.name)
            if shape and SHAPE_INDEX[shape] not in shapes:  # the first control of a shape wins
                controls.append(i)
                shapes.append(SHAPE_INDEX[shape])
        low = np.array([spec.controls[i].min for i in controls], np.float32)
        high = np.array([spec.controls[i].max for i in controls], np.float32)
        return cls(np.array(controls, np.intp), np.array(shapes, np.intp), low, high - low)

    @property
    def empty(self) -> bool:
        return len(self.controls) == 0

    @property
    def shape_names(self) -> tuple[str, ...]:
        """The ARKit shapes this rig drives."""
        return tuple(ARKIT_BLENDSHAPES[i] for i in self.shapes)

    def coefficients(self, values: np.ndarray) -> np.ndarray:
        """All 52 ARKit coefficients in 0..1 for one frame's control values; 0 where undriven."""
        out = np.zeros(len(ARKIT_BLENDSHAPES), np.float32)
        out[self.shapes] = np.clip((values[self.controls] - self.low) / self.span, 0.0, 1.0)
        return out
