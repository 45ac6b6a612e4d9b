"""The animator fine-tuning job: avatars with trained renderers in, one animator version each out.

What it trains. The shared network comes from the base animator (the shipped one, trained on
the built-in avatars; `$FREEAVATAR_ANIMATOR_BASE` overrides it, "none" starts from scratch).
With a base, the job tunes only the named avatars' own parameters (code + control queries, or a
linear readout's weights), shared weights frozen, so no avatar tuned earlier can change. A base
with a linear readout (the shipped one) fits each avatar that has keyframes to them in closed
form, as the shipped animator was (keyframes.py): pulled towards the same fit on the avatar's
uploaded render samples, its dead zones from the job's unlabeled actors; only avatars without
keyframes are tuned by the consistency objective. Without one, it trains the shared network
together with the named avatars. An avatar that already has an active animator starts from its
tuned code and queries.

What it reads. Each avatar's ACTIVE neural renderer (trained by a renderer job), its uploaded
keyframes (`options.keyframe_limit` caps them; 0 = none), and an unlabeled actor corpus: here the
synthetic world's actor crops (no labels are read), cached under the data dir. The animator's
input is what the base animator reads (its config): the embedding, and the encoder's action-unit
read-out when the base reads the units (the shipped one may: docs/models.md); the consistency
target is always the embedding.

What it writes. One directory with `animator.pt` (shared weights + every avatar in the base and
the job) and its per-avatar ONNX graphs (runtime.py), published as an ANIMATOR version for each
named avatar.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from freeavatar._proto import avatar_pb2, job_pb2
from freeavatar_server.images import decode_image, resize
from freeavatar_server.inference.animator import ANIMATOR_FILE
from freeavatar_server.inference.shipped import ANIMATOR_DIR
from freeavatar_server.jobs.context import JobContext, JobResult
from freeavatar_server.training.animator.data import (
    TRAIN_IDENTITY_OFFSET,
    actor_clips,
    actor_images,
)
from freeavatar_server.training.animator.encoding import (
    ENCODER_FILE,
    encoder_checkpoint,
    load_frozen_encoder,
    read_images,
)
from freeavatar_server.training.animator.export import export_runtime
from freeavatar_server.training.animator.keyframes import fit_keyframes, render_prior
from freeavatar_server.training.animator.model import (
    AnimatorConfig,
    AvatarRig,
    SharedAnimator,
    _key,
    animator_inputs,
    load_animator,
    save_animator,
)
from freeavatar_server.training.animator.train import (
    ActorData,
    AnimatorTrainConfig,
    AvatarTarget,
    RigPairs,
    fit_animator,
)
from freeavatar_server.training.renderer.job import RENDERER_FILE
from freeavatar_server.training.renderer.model import load_renderer

BASE_ENV = "FREEAVATAR_ANIMATOR_BASE"
MAX_ACTORS = 2000
MIN_ACTORS = 64
CLIP_FRAMES = 12
CORPUS_SEED = 21
MAX_PRIOR_RENDERS = 3000  # render samples a keyframe fit's prior reads (the built-ins' was fitted on 3,000)


def train_config(options: job_pb2.TrainingOptions) -> AnimatorTrainConfig:
    """The training config: the job's options over the defaults."""
    overrides = {
        name: getattr(options, name)
        for name in ("steps", "batch_size", "learning_rate", "seed", "time_budget_s")
        if options.HasField(name)
    }
    return replace(AnimatorTrainConfig(), **overrides)


def base_animator_path() -> Path | None:
    """The shared network jobs start from, or None to train one from scratch."""
    configured = os.environ.get(BASE_ENV)
    if configured is not None:
        return None if configured in ("", "none") else Path(configured)
    shipped = ANIMATOR_DIR / ANIMATOR_FILE
    return shipped if shipped.exists() else None


def actor_corpus(context: JobContext, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, S, S, 3) unlabeled actor crops and (C, T, S, S, 3) clips, rendered once and cached.
    The synthetic world's action units are dropped here: the job never sees them."""
    cache = context.data_dir / "cache" / "animator" / f"actors_{n}_{size}_{CORPUS_SEED}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            return stored["images"], stored["clips"]
    images = actor_images(n, identity_offset=TRAIN_IDENTITY_OFFSET, n_identities=max(4, n // 10), seed=CORPUS_SEED, size=size).images
    clips = actor_clips(max(4, n // 50), CLIP_FRAMES, identity_offset=TRAIN_IDENTITY_OFFSET + 500_000,
                        seed=CORPUS_SEED, size=size, fps=10.0).images
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, clips=clips)
    tmp.replace(cache)
    return images, clips


def keyframes_for(
    context: JobContext, avatar_id: str, encoder: torch.nn.Module, config: AnimatorConfig, limit: int | None
) -> RigPairs | None:
    rigs, encoded = context.store.keyframes(avatar_id)
    if limit is not None:
        rigs, encoded = rigs[:limit], encoded[:limit]
    return _read_pairs(rigs, encoded, encoder, config)


def renders_for(context: JobContext, avatar_id: str, encoder: torch.nn.Module, config: AnimatorConfig) -> RigPairs | None:
    """The avatar's uploaded (rig, image) samples, its face as the encoder reads it: what a
    linear readout's keyframe fit is pulled towards. At most MAX_PRIOR_RENDERS of them, spread
    evenly over the upload (a studio may upload one kind of rig after another)."""
    rigs, encoded = context.store.render_samples(avatar_id)
    if len(encoded) > MAX_PRIOR_RENDERS:
        picks = np.linspace(0, len(encoded) - 1, MAX_PRIOR_RENDERS).round().astype(int)
        rigs, encoded = rigs[picks], [encoded[i] for i in picks]
    return _read_pairs(rigs, encoded, encoder, config)


def _read_pairs(rigs: np.ndarray, encoded: list[bytes], encoder: torch.nn.Module, config: AnimatorConfig,
                batch: int = 256) -> RigPairs | None:
    """Rigs and their encoded images, the images read into the animator's input rows (a batch
    decoded at a time, so thousands of samples never sit decoded at once)."""
    if not len(encoded):
        return None
    size = encoder.cfg.img_size
    rows = [animator_inputs(config, *read_images(encoder, np.stack([resize(decode_image(data), size) for data in
                                                                   encoded[start : start + batch]])))
            for start in range(0, len(encoded), batch)]
    return RigPairs(torch.cat(rows), torch.from_numpy(rigs))


def check_readable(config: AnimatorConfig, encoder: torch.nn.Module) -> None:
    """ValueError unless this job can give an animator of `config` every input it reads."""
    if config.embed_dim and config.embed_dim != encoder.cfg.embed_dim:
        raise ValueError(f"the base animator reads {config.embed_dim}-d embeddings; the encoder gives {encoder.cfg.embed_dim}")
    if config.unit_dim and config.unit_dim != encoder.cfg.au_units:
        raise ValueError(f"the base animator reads {config.unit_dim} action units; the encoder's read-out gives "
                         f"{encoder.cfg.au_units} (0: it has none)")
    if config.blendshape_dim:  # the job's actor corpus never goes through the real-face front end
        raise ValueError("the base animator reads the front end's blendshapes, which animator jobs do not compute: "
                         f"set ${BASE_ENV} to an animator that reads the encoder alone")


def finetune_animator_job(context: JobContext) -> list[JobResult]:
    avatar_ids = list(context.job.avatar_ids)
    options = context.job.options
    config = train_config(options)
    limit = options.keyframe_limit if options.HasField("keyframe_limit") else None

    renderers = {}
    for avatar_id in avatar_ids:
        avatar = context.store.get_avatar(avatar_id)
        summary = context.store.avatar_summary(avatar_id)
        if summary.renderer is None:
            raise ValueError(
                f"avatar {avatar.spec.name!r} has no active renderer: train one first (train_renderer); "
                "the animator learns by rendering through it"
            )
        renderers[avatar_id] = (avatar, load_renderer(context.data_dir / summary.renderer.path / RENDERER_FILE))

    base = base_animator_path()
    encoder_path = encoder_checkpoint(paired=base.parent / ENCODER_FILE if base else None)
    encoder = load_frozen_encoder(encoder_path)
    size = encoder.cfg.img_size

    model = load_animator(base) if base is not None else SharedAnimator(AnimatorConfig())
    check_readable(model.config, encoder)
    targets = []
    for index, avatar_id in enumerate(avatar_ids):
        avatar, renderer = renderers[avatar_id]
        rig = AvatarRig.from_spec(avatar.spec)
        if avatar_id in model.rigs:  # re-tuning an avatar the base already has: start over
            model = _without(model, avatar_id)
        model.add_avatar(avatar_id, rig, seed=config.seed + index)
        _warm_start(context, model, avatar_id, rig)
        targets.append(AvatarTarget(avatar_id, rig, renderer, keyframes_for(context, avatar_id, encoder, model.config, limit)))

    n = int(np.clip(config.steps * config.batch_size, MIN_ACTORS, MAX_ACTORS))
    context.report(0.0, message=f"rendering/embedding {n} unlabeled actor images")
    images, clips = actor_corpus(context, n, size)
    embeddings, units = read_images(encoder, images)
    inputs = animator_inputs(model.config, embeddings, units)  # what it reads; the target is the embedding
    c, t = clips.shape[:2]
    clip_inputs = animator_inputs(model.config, *read_images(encoder, clips.reshape(c * t, *clips.shape[2:]))).view(c, t, -1)
    n_val = max(8, n // 10)
    actors = ActorData(inputs[n_val:], embeddings[n_val:], inputs[:n_val], embeddings[:n_val], clip_inputs)
    def renders(avatar_id: str) -> RigPairs | None:
        context.report(0.0, message=f"{avatar_id}: reading its render samples for the keyframe fit's prior")
        return renders_for(context, avatar_id, encoder, model.config)

    priors = fit_linear_keyframes(model, targets, actors.inputs, config.ridge, renders)
    tuned = [aid for aid in avatar_ids if aid not in priors]
    parameters = [p for aid in tuned for p in model.avatar_parameters(aid)]
    if base is None:  # nothing to protect: the shared network learns with these avatars
        parameters = list(model.shared_parameters()) + parameters
    context.report(0.0, message=f"tuning {len(avatar_ids)} avatar(s); shared network {'frozen' if base else 'trained'}")

    def on_progress(fraction: float, metrics: dict[str, float]) -> None:
        context.report(fraction, {k.replace("/", "."): v for k, v in metrics.items()})

    def should_stop() -> bool:
        context.check_cancelled()  # raises JobCancelled out of the training loop
        return False

    fit = fit_animator(model, targets, actors, encoder, size, config, parameters, on_progress, should_stop)
    model_dir = context.model_dir(avatar_ids[0], "animator")
    save_animator(model, model_dir / ANIMATOR_FILE, {**fit.metrics, "encoder": str(encoder_path)})
    export_runtime(model_dir)
    (model_dir / "config.json").write_text(json.dumps(
        {"train": asdict(config), "encoder": str(encoder_path), "base": str(base) if base else None}, indent=2))
    results = []
    for target in targets:
        metrics = {
            "val_consistency": fit.metrics[f"val_consistency/{target.avatar_id}"],
            "train_seconds": fit.metrics["train_seconds"],
            "steps": fit.metrics["steps"],
            "keyframes": float(len(target.keyframes.inputs)) if target.keyframes else 0.0,
            "prior_renders": float(priors.get(target.avatar_id, 0)),
        }
        results.append(JobResult(target.avatar_id, avatar_pb2.MODEL_KIND_ANIMATOR, model_dir, metrics))
    context.report(1.0, {"val_consistency": fit.metrics["val_consistency"]}, message="animator tuned")
    return results


def fit_linear_keyframes(model: SharedAnimator, targets: list[AvatarTarget], unlabeled: torch.Tensor,
                         strength: float, renders: Callable[[str], RigPairs | None] | None = None) -> dict[str, int]:
    """A linear readout's avatars that have keyframes, fitted to them in closed form (keyframes.py),
    each pulled towards the fit on its own renders where `renders` gives some. Returns each fitted
    avatar's count of renders its prior read (0: none); an attention readout's avatars are tuned
    by gradient instead, and none are fitted."""
    if model.config.readout != "linear":
        return {}
    fitted = {}
    for target in targets:
        if target.keyframes is not None and len(target.keyframes.inputs):
            own = renders(target.avatar_id) if renders is not None else None
            prior = None if own is None else render_prior(model, target.avatar_id, own.inputs, own.rigs)
            fit_keyframes(model, target.avatar_id, target.keyframes.inputs, target.keyframes.rigs, strength, unlabeled,
                          prior=prior)
            fitted[target.avatar_id] = 0 if own is None else len(own.inputs)
    return fitted


def _warm_start(context: JobContext, model: SharedAnimator, avatar_id: str, rig: AvatarRig) -> None:
    """Start from this avatar's currently active tuning, when it has one with the same rig."""
    active = context.store.avatar_summary(avatar_id).animator
    if active is None:
        return
    path = context.data_dir / active.path / ANIMATOR_FILE
    if not path.exists():
        return
    previous = load_animator(path)
    if previous.rigs.get(avatar_id) != rig or previous.config != model.config:
        context.report(0.0, message=f"{avatar_id}: its active tuning is for another rig or network; starting afresh")
        return
    if model.config.readout == "linear" and not (
        torch.equal(model.input_mean, previous.input_mean) and torch.equal(model.input_scale, previous.input_scale)
    ):
        context.report(0.0, message=f"{avatar_id}: its active tuning read another input scale; starting afresh")
        return
    with torch.no_grad():
        for mine, theirs in zip(model.avatar_parameters(avatar_id), previous.avatar_parameters(avatar_id), strict=True):
            mine.copy_(theirs)
        if model.config.readout == "linear":  # its dead zones are buffers, not parameters
            zone = f"dead_zone_{_key(avatar_id)}"
            model.get_buffer(zone).copy_(previous.get_buffer(zone))


def _without(model: SharedAnimator, avatar_id: str) -> SharedAnimator:
    """A copy of `model` minus one avatar (so it can be added back fresh)."""
    fresh = SharedAnimator(model.config)
    state = model.state_dict()
    for aid, rig in model.rigs.items():
        if aid != avatar_id:
            fresh.add_avatar(aid, rig)
    fresh.load_state_dict({k: v for k, v in state.items() if k in fresh.state_dict()})
    return fresh
