"""What a handful of artist keyframes give a linear readout: which frames to pose, and the fit.

`suggest_keyframes` picks the frames of an actor's video an artist should pose: the ones that
teach the fit most (greedy D-optimal design), spread over the expressions the actor shows rather
than the common ones a random draw favours. `fit_keyframes` fits an avatar's readout to the posed
frames in closed form: ridge regression (with a penalty on the weights, the best fit we found and
an exact one: no steps, no seed), then each control's dead zone. The penalty pulls the weights
towards zero, or towards a prior: `render_prior`, the same regression fitted on the avatar's own
renders (its (rig, image) samples, read by the same encoder), which knows how each control looks
but not how an actor's face reads. docs/models.md, "Animator".
"""

from __future__ import annotations

import numpy as np
import torch

from freeavatar_server.training.animator.model import (
    MAX_DEAD_ZONE,
    SharedAnimator,
    _key,
    unit_default,
)

RENDER_PRIOR_STRENGTH = 1.0  # the prior's own ridge penalty, per render (chosen on validation actors)


def _offsets(model: SharedAnimator, avatar_id: str, rigs: torch.Tensor) -> torch.Tensor:
    """Rigs (N, n_controls, in the rig's own units) as offsets from the default, in units of range."""
    rig = model.rigs[avatar_id]
    lo = torch.tensor(rig.minimum, dtype=torch.float64)
    span = torch.tensor(rig.span, dtype=torch.float64)
    return (rigs.double() - lo) / span - unit_default(rig).double()


def _ridge(model: SharedAnimator, rows: torch.Tensor, target: torch.Tensor, strength: float,
           prior: torch.Tensor | None = None) -> torch.Tensor:
    """(in_dim + 1, n_controls): weights and (last row) bias of the ridge regression of `target`
    on the standardised rows, the weights pulled towards `prior` (in_dim, n_controls) or zero;
    the bias is not penalised."""
    x = torch.cat([model.standardised(rows).double(), torch.ones(len(rows), 1, dtype=torch.float64)], dim=1)
    penalty = strength * torch.eye(x.shape[1], dtype=torch.float64)
    penalty[-1, -1] = 0
    rhs = x.T @ target
    if prior is not None:
        rhs = rhs + penalty[:, :-1] @ prior.double()
    return torch.linalg.solve(x.T @ x + penalty, rhs)


def render_prior(model: SharedAnimator, avatar_id: str, rows: torch.Tensor, rigs: torch.Tensor,
                 strength_per_render: float = RENDER_PRIOR_STRENGTH) -> torch.Tensor:
    """(in_dim, n_controls) weights a keyframe fit can start from: the ridge regression of the
    avatar's own rigs (N, n_controls) on the animator's input rows read from its renders of them
    (N, in_dim; the encoder reading the avatar's face, not an actor's), standardised by the
    network's input scale (the actors'). The penalty grows with the renders (`strength_per_render`
    each), so that it weighs alike against the renders' summed squared error however many there
    are. Its bias is left out: where an actor's face rests is the keyframes' to say."""
    if model.config.readout != "linear":
        raise ValueError("a render prior is for a linear readout's keyframe fit")
    if len(rows) != len(rigs) or len(rows) < 2:
        raise ValueError(f"need one rig per render row and at least 2, got {len(rows)} rows and {len(rigs)} rigs")
    if rows.shape[1] != model.config.in_dim:
        raise ValueError(f"render rows must have the animator's {model.config.in_dim} inputs, got {rows.shape[1]}")
    if strength_per_render <= 0:
        raise ValueError(f"the prior's penalty must be above 0, got {strength_per_render}")
    return _ridge(model, rows, _offsets(model, avatar_id, rigs), strength_per_render * len(rows))[:-1]


def fit_keyframes(model: SharedAnimator, avatar_id: str, rows: torch.Tensor, rigs: torch.Tensor, strength: float,
                  unlabeled: torch.Tensor | None = None, rest: float = 0.05, prior: torch.Tensor | None = None) -> None:
    """Set this avatar's weights and bias to the ridge regression of its keyframes' rigs
    (K, n_controls, in the rig's own units) on their input rows (K, in_dim), standardised by the
    network's input scale. `strength` is the penalty on the squared weights against the summed
    squared error; the bias is not penalised. Every control is fitted in units of its range,
    as offsets from its default. With a `prior` (in_dim, n_controls; `render_prior`) the
    penalty pulls the weights towards it instead of towards zero.

    With `unlabeled` rows (actors no artist posed), each control's dead zone is set so that it
    holds the control at rest on as large a share of them as of the keyframes rest (a keyframe
    rests when within `rest` of its range from the default: the artist's hand is not exact), and
    at most MAX_DEAD_ZONE. The share counts offsets on both sides of the default; a control whose
    default is an end of its range also rests, through the clamp, where its offset points past
    that end, so it may rest somewhat more often than its keyframes did."""
    if model.config.readout != "linear":
        raise ValueError("only a linear readout is fitted to keyframes in closed form")
    if len(rows) != len(rigs) or not len(rows):
        raise ValueError(f"need one rig per keyframe row, got {len(rows)} rows and {len(rigs)} rigs")
    if strength <= 0:
        raise ValueError(f"the ridge penalty must be above 0 (a handful of keyframes needs it), got {strength}")
    expected = (model.config.in_dim, model.rigs[avatar_id].n_controls)
    if prior is not None and tuple(prior.shape) != expected:
        raise ValueError(f"the prior's weights must be {expected}, got {tuple(prior.shape)}")
    target = _offsets(model, avatar_id, rigs)
    solution = _ridge(model, rows, target, strength, prior)
    key = _key(avatar_id)
    width = getattr(model, f"dead_zone_{key}")
    with torch.no_grad():
        model.weights[key].copy_(solution[:-1].T)
        model.biases[key].copy_(solution[-1])
        width.zero_()
        if unlabeled is not None:
            offsets = model.readout_values(unlabeled, avatar_id).abs()  # no dead zone yet: the raw offsets
            resting = (target.abs() < rest).double().mean(0)  # (n_controls,) share of keyframes at rest
            share = torch.quantile(offsets.double(), resting, dim=0).diagonal()  # each control's own share
            width.copy_(torch.where(resting > 0, share, 0.0).clamp(max=MAX_DEAD_ZONE))


def suggest_keyframes(rows: np.ndarray, count: int, strength: float = 30.0) -> np.ndarray:
    """Indices of the `count` rows (animator input rows of an actor's frames, (N, in_dim)) an
    artist should pose, in the order picked. Greedy D-optimal design for the ridge fit on rows
    standardised over these frames: each pick is the frame whose reading the fit, given the picks
    before it and the penalty `strength`, is least sure of (the largest x' (strength I + X'X)^-1 x)."""
    if not 0 < count <= len(rows):
        raise ValueError(f"cannot suggest {count} keyframes from {len(rows)} frames")
    x = (rows - rows.mean(0)) / np.maximum(rows.std(0), 1e-6)
    inverse = np.eye(x.shape[1]) / strength  # (strength I + X'X)^-1 of no picks yet
    picked: list[int] = []
    for _ in range(count):
        uncertainty = np.einsum("ij,jk,ik->i", x, inverse, x)
        uncertainty[picked] = -np.inf
        best = int(uncertainty.argmax())
        picked.append(best)
        shifted = inverse @ x[best]  # Sherman-Morrison: the inverse with this frame added
        inverse -= np.outer(shifted, shifted) / (1 + x[best] @ shifted)
    return np.array(picked)
