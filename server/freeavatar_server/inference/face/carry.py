"""Blendshapes between face meshes: the last mesh's reading carried forward by the change in the
expression encoder's action units since that mesh's frame.

The mesh runs at most `serve --face-rate` times a second per actor and after its frame was
answered, so a frame reads blendshapes one or two frames old: a blink (four to six frames) comes
and goes between two readings. The encoder reads every frame. A linear map, fitted on synthetic
clips (`training.face.blendshape_carry`), turns its change in units since the mesh's frame into a
change in blendshapes:

    carried = clip(mesh_blendshapes + (units_now - units_at_mesh) @ weights, 0, 1)

Only changes cross over, so what the encoder reads wrong on a still face (a real person's, say)
cancels out (its frame-to-frame noise does pass); the mesh, trained on real faces, still sets
the level at every run. Blendshapes the carry does not predict better than holding (chosen on
the training clips) have zero weights.

The file also holds the other direction for the smile (`SmileLift`): the encoder, trained on
synthetic faces, reads a real person's smile weakly (the animators followed 10-12 of 15 real
smiles where MediaPipe's blendshapes follow 14), so the lip-corner-pull units an animator reads
are raised to what MediaPipe's smile (as carried, before the emotion guard, which then guards
the lifted units once) says they should be, a line fitted on the same clips, wherever the
encoder reads less. On synthetic faces, which the encoder reads well, that rarely changes
anything.

The maps belong to one encoder's units: the file names the encoders (by their graphs' SHA-256)
it was fitted through, and `for_encoder` gives None for any other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.inference.shipped import BLENDSHAPE_CARRY


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SMILE_BLENDSHAPES = (ARKIT_BLENDSHAPES.index("mouthSmileLeft"), ARKIT_BLENDSHAPES.index("mouthSmileRight"))
LIP_CORNER_PULLS = ("lip_corner_pull_L", "lip_corner_pull_R")  # the encoder's units the smile moves, in the same order


@dataclass(frozen=True)
class SmileLift:
    """The lip-corner-pull units raised to what MediaPipe's smile says they are (module docstring)."""

    units: tuple[int, int]  # the lip-corner-pull units, left and right
    lines: np.ndarray  # (2, 2): per side, the unit at no smile and its rise per unit of smile

    def lift(self, units: np.ndarray, smile: np.ndarray) -> np.ndarray:
        """(units,) read-out, each lip-corner pull raised to the line of the (2,) smile (left,
        right) on its side where the encoder read less (a new array)."""
        lifted = np.array(units, np.float32)
        said = self.lines[:, 0] + self.lines[:, 1] * smile
        lifted[list(self.units)] = np.maximum(lifted[list(self.units)], said)
        return lifted


@dataclass(frozen=True)
class BlendshapeCarry:
    weights: np.ndarray  # (units, 52) float32: a change in units -> a change in blendshapes
    encoders: tuple[str, ...] = ()  # SHA-256 of the encoder graphs whose units it reads
    smile_lift: SmileLift | None = None  # fitted on the same clips, kept in the same file

    def carry(self, blendshapes: np.ndarray, units: np.ndarray, units_at_mesh: np.ndarray) -> np.ndarray:
        """The mesh's (52,) blendshapes, moved by the units' change since its frame."""
        return np.clip(blendshapes + (units - units_at_mesh) @ self.weights, 0.0, 1.0).astype(np.float32)

    def save(self, path: Path) -> None:
        lift = {} if self.smile_lift is None else {
            "smile_units": np.array(self.smile_lift.units), "smile_lines": self.smile_lift.lines.astype(np.float32)}
        np.savez(path, weights=self.weights.astype(np.float32), encoders=np.array(self.encoders), **lift)

    @classmethod
    def load(cls, path: Path = BLENDSHAPE_CARRY) -> BlendshapeCarry:
        with np.load(path) as data:
            lift = None
            if "smile_lines" in data:  # (files written before the lift have none)
                lift = SmileLift((int(data["smile_units"][0]), int(data["smile_units"][1])), data["smile_lines"])
            return cls(data["weights"], tuple(str(e) for e in data["encoders"]), lift)

    @classmethod
    def for_encoder(cls, encoder_path: Path, path: Path = BLENDSHAPE_CARRY) -> BlendshapeCarry | None:
        """The shipped carry if it was fitted through this encoder graph, else None (frames
        between meshes then hold the last reading)."""
        if not path.exists():
            return None
        carry = cls.load(path)
        return carry if file_digest(encoder_path) in carry.encoders else None
