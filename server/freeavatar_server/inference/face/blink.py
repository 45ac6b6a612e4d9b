"""MediaPipe's blink read as how far the lids are shut.

On real open eyes MediaPipe's eyeBlink is rarely 0: 0.1-0.4 on the real-face set's open eyes,
most where the eyes narrow in a laugh or look down, while shut eyes read 0.45-0.85 (a synthetic
full blink 0.4-0.8). Served as it is, an ARKit avatar (and any control aliased to a blink) keeps
its lids a third shut on a laughing face and never quite shuts them. The curve maps MediaPipe's
[closed_from, closed_at] to [0, 1]: nothing below, fully shut above.

The shipped curve was chosen on the real set's tune split and synthetic clips
(`research/blink_curve.py`): of the curves that judge every tune face's eyes right, the one
nearest the synthetic actors' true lid closure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freeavatar.arkit import ARKIT_BLENDSHAPES

EYE_BLINKS = (ARKIT_BLENDSHAPES.index("eyeBlinkLeft"), ARKIT_BLENDSHAPES.index("eyeBlinkRight"))


@dataclass(frozen=True)
class BlinkCurve:
    closed_from: float = 0.15  # MediaPipe's eyeBlink where the lids start to close
    closed_at: float = 0.85  # ... and where they are shut

    def __post_init__(self) -> None:
        if not 0.0 <= self.closed_from < self.closed_at <= 1.0:
            raise ValueError(f"need 0 <= closed_from < closed_at <= 1, got {self.closed_from}, {self.closed_at}")

    def shut(self, blinks: np.ndarray) -> np.ndarray:
        """MediaPipe's eyeBlink values (any shape) -> how far the lids are shut, 0..1."""
        return np.clip((blinks - self.closed_from) / (self.closed_at - self.closed_from), 0.0, 1.0)

    def apply(self, blendshapes: np.ndarray) -> np.ndarray:
        """The (52,) blendshapes with both blinks mapped (a new array)."""
        out = np.array(blendshapes, np.float32)
        out[list(EYE_BLINKS)] = self.shut(out[list(EYE_BLINKS)])
        return out
