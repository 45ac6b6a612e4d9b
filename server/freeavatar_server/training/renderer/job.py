"""The renderer-training job: the avatar's uploaded samples in, a published renderer out."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np

from freeavatar._proto import avatar_pb2, job_pb2
from freeavatar_server.images import decode_image, resize
from freeavatar_server.jobs.context import JobContext, JobResult
from freeavatar_server.training.renderer.model import save_renderer
from freeavatar_server.training.renderer.train import RendererTrainConfig, fit_renderer

MIN_SAMPLES = 50
RENDERER_FILE = "renderer.pt"


def train_config(options: job_pb2.TrainingOptions) -> RendererTrainConfig:
    """The training config: the job's options over the defaults."""
    config = RendererTrainConfig()
    overrides = {
        name: getattr(options, option)
        for name, option in (
            ("steps", "steps"),
            ("batch_size", "batch_size"),
            ("learning_rate", "learning_rate"),
            ("image_size", "image_size"),
            ("seed", "seed"),
            ("time_budget_s", "time_budget_s"),
        )
        if options.HasField(option)
    }
    return replace(config, **overrides)


def train_renderer_job(context: JobContext) -> list[JobResult]:
    (avatar_id,) = context.job.avatar_ids
    avatar = context.store.get_avatar(avatar_id)
    config = train_config(context.job.options)
    rigs, encoded = context.store.render_samples(avatar_id)
    if len(rigs) < MIN_SAMPLES:
        raise ValueError(
            f"avatar {avatar.spec.name!r} has {len(rigs)} render samples; at least {MIN_SAMPLES} "
            "are needed (upload_render_samples)"
        )
    context.report(0.0, message=f"decoding {len(rigs)} samples at {config.image_size} px")
    images = np.stack([resize(decode_image(data), config.image_size) for data in encoded])

    def on_progress(fraction: float, metrics: dict[str, float]) -> None:
        context.report(fraction, metrics)

    def should_stop() -> bool:
        context.check_cancelled()  # raises JobCancelled out of the training loop
        return False

    fit = fit_renderer(avatar.spec, rigs, images, config, on_progress, should_stop)
    model_dir = context.model_dir(avatar_id, "renderer")
    save_renderer(fit.model, model_dir / RENDERER_FILE, fit.metrics)
    (model_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    context.report(1.0, fit.metrics, message=f"held-out PSNR {fit.metrics['psnr']:.1f} dB")
    return [JobResult(avatar_id, avatar_pb2.MODEL_KIND_RENDERER, model_dir, fit.metrics)]
