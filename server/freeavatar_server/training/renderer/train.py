"""Training a neural renderer on an avatar's (rig, image) samples, and its quality metrics."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from freeavatar.rig import RigSpec
from freeavatar_server.training.renderer.model import NeuralRenderer, RendererConfig

ProgressFn = Callable[[float, dict[str, float]], None]


@dataclass(frozen=True)
class RendererTrainConfig:
    image_size: int = 64
    width: int = 16
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    time_budget_s: float = 540.0  # the schedule ends at whichever comes first: steps or budget
    holdout_share: float = 0.1
    # The paper weighs mouth and eye regions x10. A studio's avatar comes with no region labels,
    # so weigh the pixels that the rig actually moves (per-pixel spread over the samples).
    moving_pixel_weight: float = 10.0
    evaluations: int = 10  # held-out checks over the run; the best one is kept


@dataclass
class RendererFit:
    model: NeuralRenderer
    metrics: dict[str, float]  # held-out psnr, ssim; train_seconds, steps, samples


def fit_renderer(
    spec: RigSpec,
    rigs: np.ndarray,
    images: np.ndarray,
    config: RendererTrainConfig,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RendererFit:
    """Train on (N, controls) rigs and (N, S, S, 3) uint8 images at the config's size.

    `should_stop` is polled every step (cancellation); `on_progress(fraction, metrics)` hears
    about every held-out evaluation and about 100 times over the run.
    """
    if len(rigs) != len(images) or len(rigs) < 10:
        raise ValueError(f"need at least 10 matching samples, got {len(rigs)} rigs, {len(images)} images")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(np.ascontiguousarray(rigs, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    order = torch.randperm(len(x), generator=generator)
    n_val = max(1, int(len(x) * config.holdout_share))
    val, train = order[:n_val], order[n_val:]

    model = NeuralRenderer(
        RendererConfig(
            n_controls=len(spec.controls),
            control_min=tuple(c.min for c in spec.controls),
            control_max=tuple(c.max for c in spec.controls),
            image_size=config.image_size,
            width=config.width,
        )
    )
    weight = 1 + config.moving_pixel_weight * moving_pixels(y[train])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    started = time.monotonic()
    best: tuple[float, dict[str, torch.Tensor]] = (-math.inf, {})
    metrics: dict[str, float] = {}
    next_eval, next_report = 1, 1
    step = 0
    while True:
        fraction = max(step / config.steps, (time.monotonic() - started) / config.time_budget_s)
        if fraction >= 1 or should_stop():
            break
        for group in optimizer.param_groups:  # cosine decay over whichever budget runs out first
            group["lr"] = config.learning_rate * 0.5 * (1 + math.cos(math.pi * fraction))
        batch = train[torch.randint(len(train), (config.batch_size,), generator=generator)]
        model.train()
        loss = (weight * (model(x[batch]) - y[batch]).abs()).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if fraction * config.evaluations >= next_eval:
            next_eval += 1
            metrics = evaluate(model, x[val], y[val])
            if metrics["psnr"] > best[0]:
                best = (metrics["psnr"], copy.deepcopy(model.state_dict()))
            if on_progress:
                on_progress(fraction, {"loss": loss.item(), **metrics})
        elif on_progress and fraction * 100 >= next_report:
            next_report = int(fraction * 100) + 1
            on_progress(fraction, {"loss": loss.item()})
    final = evaluate(model, x[val], y[val])
    if final["psnr"] < best[0]:
        model.load_state_dict(best[1])
        final = evaluate(model, x[val], y[val])
    final |= {
        "train_seconds": time.monotonic() - started,
        "steps": float(step),
        "samples": float(len(train)),
    }
    return RendererFit(model.eval(), final)


def moving_pixels(images: torch.Tensor) -> torch.Tensor:
    """(1, 1, S, S) in [0, 1]: how much each pixel varies across the samples, smoothed."""
    spread = images.std(dim=0).mean(dim=0, keepdim=True)[None]
    spread = F.avg_pool2d(spread, 5, stride=1, padding=2)
    return spread / spread.max().clamp_min(1e-6)


@torch.no_grad()
def evaluate(model: NeuralRenderer, rigs: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    model.eval()
    predicted = torch.cat([model(chunk) for chunk in rigs.split(256)])
    return {"psnr": psnr(predicted, images), "ssim": ssim(predicted, images)}


def psnr(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB over a batch of [0, 1] images."""
    mse = F.mse_loss(predicted, target).clamp_min(1e-10)
    return float(10 * torch.log10(1 / mse))


def ssim(predicted: torch.Tensor, target: torch.Tensor, window: int = 7) -> float:
    """Mean structural similarity (Wang et al. 2004) with a Gaussian window, per channel."""
    sigma = 1.5
    coords = torch.arange(window, dtype=torch.float32) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    channels = predicted.shape[1]
    kernel = g.expand(channels, 1, window, window)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_p, mu_t = blur(predicted), blur(target)
    var_p = blur(predicted * predicted) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    cov = blur(predicted * target) - mu_p * mu_t
    score = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    )
    return float(score.mean())
