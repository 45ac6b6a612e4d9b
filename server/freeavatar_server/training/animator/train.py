"""Training the animator with the paper's expression-consistency loss.

For an actor image x with embedding e = E(x), the animator A predicts the avatar's rig, the
avatar's neural renderer R draws it, and the frozen encoder E reads the expression back:

    L_consistency = || E(R(A(e, avatar))) - e ||^2

Gradients flow through the frozen R and E into A (the authors' release ran R under no_grad,
which trains nothing there). Rig regularisers keep the solution a rig an artist would accept:

* in range: by construction (the model's bounded outputs, see animator/model.py);
* plausible: a small penalty on what the bound hides (values pushed past the ends of the range,
  or saturated pre-sigmoid values), so the optimiser cannot park controls beyond the ends of
  their range where the renderer saw few samples and may be fooled;
* sparse: L1 of each control's distance from its default (faces move a few controls at once);
* temporally smooth: on unlabeled video clips, the squared frame-to-frame rig change.

Artist keyframes (an actor embedding with the rig an artist posed for it) add a supervised L1,
and so can the avatar's own render samples (the rig the engine drew, read back from its image).
Nothing here reads synthetic ground truth: inputs are embeddings of unlabeled images, the
renderer learnt from (rig, image) samples, keyframes come from the caller.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freeavatar.rig import RigControl, RigSpec
from freeavatar_server.avatars.sampling import propose_rig_vectors
from freeavatar_server.training.animator.model import AvatarRig, bound, excess, unit_default
from freeavatar_server.training.encoder.train import augment
from freeavatar_server.training.renderer.model import NeuralRenderer

ProgressFn = Callable[[float, dict[str, float]], None]
Encoder = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, S, S) in [0,1] -> (B, 16)


@dataclass(frozen=True)
class AnimatorTrainConfig:
    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 3e-3
    time_budget_s: float = 540.0  # the schedule ends at whichever comes first: steps or budget
    seed: int = 0
    sparsity_weight: float = 1.0  # with a real encoder, 0.02-0.3 let the animator chase renderer artefacts (CHANGELOG.md)
    # None: by the model's output. 1.0 holds the straight-through clamp's hidden values near the
    # range (without it the consistency gradient, passed through a clamped control, pushes it
    # ever further out: a run at 1e-3 reached 180 range-widths); 1e-3 for the sigmoids of older
    # models (1.0 would pull every control to the middle of its range).
    plausible_weight: float | None = None
    smooth_weight: float = 1.0
    keyframe_weight: float = 1.0
    clips_per_step: int = 4
    evaluations: int = 10  # validation checks (unlabeled consistency); the best state is kept
    # Compare embeddings relative to a reference point of each domain, which removes the
    # constant offset between a human face and, say, a robot in embedding space:
    # "none": absolute embeddings; "renders": the mean of the avatar's renders over random rigs
    # against the mean actor; "neutral": the avatar's render at its default rig against the
    # mean actor (the average actor should wear the avatar's resting face).
    centering: str = "neutral"
    # See each render through small random shifts, scales, turns and light changes (the
    # encoder's training augmentation) in the consistency loss: a rig must match the actor
    # under all of them, so the animator cannot win on one render's pixel-level quirks of the
    # encoder. Per image, optimising through the jitter brought the human's rigs closer to the
    # actor by the reference renderer's measure, too (benchmarks/animator_oracle.py); in joint
    # training it lost on validation (CHANGELOG.md, session 5), so it is off by default.
    jitter: bool = False
    # The avatar's render samples as supervision (render_sample_pairs): weight of their L1 term.
    samples_weight: float = 0.0
    # A linear readout's avatars with keyframes are fitted to them in closed form (keyframes.py)
    # with this penalty, and not tuned by gradient after.
    ridge: float = 30.0


@dataclass
class RigPairs:
    """Animator inputs paired with the rig they should give: artist keyframes (an actor image
    and the rig an artist posed for it), or the avatar's own render samples (the image its
    engine drew for a rig, seen through the encoder and moved into the actors' frame)."""

    inputs: torch.Tensor  # (K, in_dim) what the animator sees for those images
    rigs: torch.Tensor  # (K, n_controls) in the controls' own ranges


@dataclass
class AvatarTarget:
    """One avatar to tune: its rig, its frozen neural renderer, optional keyframes."""

    avatar_id: str
    rig: AvatarRig
    renderer: NeuralRenderer
    keyframes: RigPairs | None = None
    samples: RigPairs | None = None  # see render_sample_pairs
    center: torch.Tensor | None = None  # mean embedding of its renders (set by fit)


@dataclass
class ActorData:
    """Unlabeled actor material, already through the frozen encoder.

    `inputs` is what the animator reads (the embeddings themselves, or for a baseline some
    other per-image feature); `targets` is the embedding the render must reproduce.
    """

    inputs: torch.Tensor  # (N, in_dim)
    targets: torch.Tensor  # (N, 16)
    val_inputs: torch.Tensor
    val_targets: torch.Tensor
    clip_inputs: torch.Tensor | None = None  # (C, T, in_dim) consecutive video frames


@dataclass
class FitResult:
    metrics: dict[str, float] = field(default_factory=dict)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode (BatchNorm statistics fixed) and no parameter updates; gradients still flow."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def render_embed(renderer: NeuralRenderer, encoder: Encoder, rig: torch.Tensor, size: int,
                 jitter: torch.Generator | None = None) -> torch.Tensor:
    """E(R(rig)). With `jitter`, the render is first moved, scaled, turned and relit a little,
    as the encoder's own training augments faces (a fresh draw per image from the generator)."""
    image = renderer(rig)
    if image.shape[-1] != size:
        image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    if jitter is not None:
        image = augment(image, jitter)
    return encoder(image)


@torch.no_grad()
def avatar_center(target: AvatarTarget, encoder: Encoder, size: int, centering: str) -> torch.Tensor | None:
    """The avatar's reference point in embedding space for `centering` (see the config)."""
    if centering == "none":
        return None
    if centering == "neutral":
        return render_embed(target.renderer, encoder, torch.tensor([target.rig.default]), size)[0]
    if centering == "renders":
        return mean_render_embedding(target, encoder, size)
    raise ValueError(f"unknown centering {centering!r}: expected none, renders or neutral")


@torch.no_grad()
def mean_render_embedding(target: AvatarTarget, encoder: Encoder, size: int, n: int = 256, seed: int = 0) -> torch.Tensor:
    """Mean embedding of the avatar's renders over random in-range rigs (unlabeled statistic)."""
    spec = RigSpec(
        name=target.avatar_id,
        controls=[RigControl(name=nm, min=lo, max=hi, default=d)
                  for nm, lo, hi, d in zip(target.rig.names, target.rig.minimum, target.rig.maximum, target.rig.default, strict=True)],
    )
    rigs = torch.from_numpy(propose_rig_vectors(spec, n, seed=seed))
    return torch.cat([render_embed(target.renderer, encoder, r, size) for r in rigs.split(64)]).mean(0)


def fit_animator(
    model: nn.Module,
    targets: list[AvatarTarget],
    actors: ActorData,
    encoder: Encoder,
    encoder_size: int,
    config: AnimatorTrainConfig,
    parameters: list[nn.Parameter],
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> FitResult:
    """Tune `parameters` of `model` (any module with .normalized/.unbounded/.to_rig(x, avatar_id)
    and .config.output)
    so every target avatar's renders match the actors' expressions. Other parameters stay as
    they are (adding an avatar passes only its own code and queries)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    for t in targets:
        freeze(t.renderer)
    actor_center = actors.targets.mean(0)
    for t in targets:
        t.center = avatar_center(t, encoder, encoder_size, config.centering)
    trainable = {id(p) for p in parameters}
    saved_flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():  # no wasted gradients into weights this run does not tune
        p.requires_grad_(id(p) in trainable)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=1e-4) if parameters else None
    started = time.monotonic()
    best: tuple[float, dict[str, torch.Tensor]] = (math.inf, {})
    metrics: dict[str, float] = {}
    next_eval, next_report, step = 1, 1, 0
    try:
        while optimizer is not None:  # nothing to tune (every avatar fitted already): validate only
            fraction = max(step / config.steps, (time.monotonic() - started) / config.time_budget_s)
            if fraction >= 1 or should_stop():
                break
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * 0.5 * (1 + math.cos(math.pi * fraction))
            model.train()
            total = torch.zeros(())
            parts: dict[str, float] = {}
            for t in targets:
                batch = torch.randint(len(actors.inputs), (config.batch_size,), generator=generator)
                losses = step_losses(model, t, actors, batch, encoder, encoder_size, actor_center, config, generator)
                total = total + sum(losses.values())
                for name, value in losses.items():
                    parts[name] = parts.get(name, 0.0) + float(value.detach()) / len(targets)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            step += 1
            if fraction * config.evaluations >= next_eval:
                next_eval += 1
                metrics = validate(model, targets, actors, encoder, encoder_size, actor_center, config.keyframe_weight)
                if metrics["val_objective"] < best[0]:
                    best = (metrics["val_objective"], copy.deepcopy(model.state_dict()))
                if on_progress:
                    on_progress(fraction, {**parts, **metrics})
            elif on_progress and fraction * 100 >= next_report:
                next_report = int(fraction * 100) + 1
                on_progress(fraction, parts)
        final = validate(model, targets, actors, encoder, encoder_size, actor_center, config.keyframe_weight)
        if best[1] and final["val_objective"] > best[0]:
            model.load_state_dict(best[1])
            final = validate(model, targets, actors, encoder, encoder_size, actor_center, config.keyframe_weight)
    finally:
        for p in model.parameters():
            p.requires_grad_(saved_flags[id(p)])
    model.eval()
    final |= {"train_seconds": time.monotonic() - started, "steps": float(step)}
    return FitResult(final)


def step_losses(
    model: nn.Module,
    target: AvatarTarget,
    actors: ActorData,
    batch: torch.Tensor,
    encoder: Encoder,
    encoder_size: int,
    actor_center: torch.Tensor,
    config: AnimatorTrainConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    aid = target.avatar_id
    unbounded = model.unbounded(actors.inputs[batch], aid)
    unit = bound(unbounded, model.config.output)
    rendered = render_embed(target.renderer, encoder, model.to_rig(unit, aid), encoder_size, generator if config.jitter else None)
    goal = actors.targets[batch]
    if target.center is not None:
        rendered, goal = rendered - target.center, goal - actor_center
    default = unit_default(target.rig)
    losses = {
        "consistency": (rendered - goal).pow(2).sum(-1).mean(),
        "sparsity": config.sparsity_weight * (unit - default).abs().mean(),
        "plausible": plausible_weight(config, model.config.output) * excess(unbounded, model.config.output).mean(),
    }
    if actors.clip_inputs is not None and config.smooth_weight > 0:
        clips = actors.clip_inputs[torch.randint(len(actors.clip_inputs), (config.clips_per_step,), generator=generator)]
        c, t, d = clips.shape
        u = model.normalized(clips.reshape(c * t, d), aid).view(c, t, -1)
        losses["smooth"] = config.smooth_weight * (u[:, 1:] - u[:, :-1]).pow(2).sum(-1).mean()
    if target.keyframes is not None and len(target.keyframes.inputs):
        losses["keyframes"] = config.keyframe_weight * pair_distance(model, target, target.keyframes)
    if target.samples is not None and config.samples_weight > 0:
        pick = torch.randint(len(target.samples.inputs), (config.batch_size,), generator=generator)
        losses["samples"] = config.samples_weight * pair_distance(model, target, target.samples, pick)
    return losses


def plausible_weight(config: AnimatorTrainConfig, output: str) -> float:
    if config.plausible_weight is not None:
        return config.plausible_weight
    return 1e-3 if output == "sigmoid" else 1.0


@torch.no_grad()
def validate(
    model: nn.Module,
    targets: list[AvatarTarget],
    actors: ActorData,
    encoder: Encoder,
    encoder_size: int,
    actor_center: torch.Tensor,
    keyframe_weight: float = 1.0,
) -> dict[str, float]:
    """Consistency on held-back unlabeled actor images (no ground truth): model selection."""
    model.eval()
    out: dict[str, float] = {}
    for t in targets:
        rig = model(actors.val_inputs, t.avatar_id)
        rendered = torch.cat([render_embed(t.renderer, encoder, r, encoder_size) for r in rig.split(128)])
        goal = actors.val_targets
        if t.center is not None:
            rendered, goal = rendered - t.center, goal - actor_center
        out[f"val_consistency/{t.avatar_id}"] = float((rendered - goal).pow(2).sum(-1).mean())
        if t.keyframes is not None and len(t.keyframes.inputs):
            out[f"keyframe_error/{t.avatar_id}"] = keyframe_error(model, t)
    out["val_consistency"] = float(np.mean([out[f"val_consistency/{t.avatar_id}"] for t in targets]))
    # Model selection: held-back consistency, plus the keyframe fit where the artist gave some
    # (otherwise an early state that ignores the keyframes could win).
    out["val_objective"] = out["val_consistency"] + keyframe_weight * float(
        np.mean([out.get(f"keyframe_error/{t.avatar_id}", 0.0) for t in targets])
    )
    return out


def keyframe_error(model: nn.Module, target: AvatarTarget) -> float:
    """Mean |predicted - keyframe| in units of each control's range, on the keyframe images."""
    assert target.keyframes is not None
    return float(pair_distance(model, target, target.keyframes))


def pair_distance(model: nn.Module, target: AvatarTarget, pairs: RigPairs, pick: torch.Tensor | None = None) -> torch.Tensor:
    """A supervised term before its weight: mean |predicted - paired rig| in range units."""
    inputs, rigs = (pairs.inputs, pairs.rigs) if pick is None else (pairs.inputs[pick], pairs.rigs[pick])
    lo = torch.tensor(target.rig.minimum)
    span = torch.tensor(target.rig.maximum) - lo
    wanted = ((rigs - lo) / span).clamp(0, 1)
    return (model.normalized(inputs, target.avatar_id) - wanted).abs().mean()


@torch.no_grad()
def render_sample_pairs(
    target: AvatarTarget, sample_embeddings: torch.Tensor, rigs: torch.Tensor, actor_embeddings: torch.Tensor,
    encoder: Encoder, size: int, centering: str,
) -> RigPairs:
    """The avatar's own (rig, image) samples as supervision: the animator should read the
    avatar's face the way the studio's engine posed it. The sample embeddings are moved into
    the actors' frame the way the consistency loss compares them (the avatar's reference point
    to the mean actor), so the same input means the same expression on either side."""
    center = avatar_center(target, encoder, size, centering)
    shift = 0 if center is None else actor_embeddings.mean(0) - center
    return RigPairs(sample_embeddings + shift, rigs)
