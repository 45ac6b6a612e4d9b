"""Where the encoder's crop constants (`inference.face.crop`: CROP_CY, CROP_HALF) come from: a
least-squares fit to the synthetic world's geometry, re-run by the tests."""

from __future__ import annotations

import numpy as np

from freeavatar_server.inference.face.crop import CROP_CY, CROP_HALF
from freeavatar_server.synth.actors import (
    _scene,
    au_to_muscles,
    make_identities,
    sample_expressions,
    sample_face_boxes,
    sample_nuisance,
    sample_poses,
)
from freeavatar_server.synth.face import face_box


def fit_crop_framing(n: int = 20000, seed: int = 0) -> dict[str, tuple[float, ...]]:
    """Re-derive CROP_CY / CROP_HALF from the synthetic world's geometry (no rendering).

    For each random identity, pose and expression: where render_frames puts the face box, and
    where render_faces' crop (head centre + 0.04 half-sides down, half-side = scale / 1.2) would
    lie in the same frame. Returns the least-squares coefficients and residual stds.
    """
    rng = np.random.default_rng(seed)
    ids, seeds = rng.integers(0, 2**62, n), rng.integers(0, 2**62, n)
    jaw = au_to_muscles(sample_expressions(n, rng))["jaw_open"]
    pose, ident, nui = sample_poses(seeds), make_identities(ids), sample_nuisance(seeds, False)
    req = sample_face_boxes(seeds, 640, 480)
    zero, one = np.zeros(n), np.ones(n)
    unit = face_box(ident, _scene(nui, pose, zero, zero, one, 1.0), jaw)
    k = (req[:, 2] - req[:, 0]) / (unit[:, 2] - unit[:, 0])  # same placement as render_frames
    hx = (req[:, 0] + req[:, 2]) / 2 - k * (unit[:, 0] + unit[:, 2]) / 2
    hy = (req[:, 1] + req[:, 3]) / 2 - k * (unit[:, 1] + unit[:, 3]) / 2
    box = face_box(ident, _scene(nui, pose, hx, hy, k, 1.0), jaw)
    bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    half = k / 1.2
    design = np.stack([bw, bh], axis=1)
    cy_coef, *_ = np.linalg.lstsq(design, hy + 0.04 * half - box[:, 1], rcond=None)
    half_coef, *_ = np.linalg.lstsq(design, half, rcond=None)
    cy_err = box[:, 1] + design @ np.array(CROP_CY) - (hy + 0.04 * half)
    half_err = design @ np.array(CROP_HALF) - half
    return {
        "cy": tuple(float(c) for c in cy_coef),
        "half": tuple(float(c) for c in half_coef),
        "cx_residual": float(np.std((hx - (box[:, 0] + box[:, 2]) / 2) / bw)),
        "cy_residual": float(np.std((hy + 0.04 * half - box[:, 1] - design @ cy_coef) / bw)),
        "half_residual": float(np.std((half - design @ half_coef) / bw)),
        # errors of the shipped constants on this sample, in face-box widths
        "shipped_cy_bias": float(np.mean(cy_err / bw)),
        "shipped_cy_std": float(np.std(cy_err / bw)),
        "shipped_half_bias": float(np.mean(half_err / bw)),
        "shipped_half_std": float(np.std(half_err / bw)),
    }
