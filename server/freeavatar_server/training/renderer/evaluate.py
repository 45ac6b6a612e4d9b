"""`freeavatar eval renderer`: train a renderer for each built-in avatar from reference-rendered
samples and measure it on rigs it never saw (PSNR, SSIM), with a picture of both side by side."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from freeavatar_server.avatars.sampling import propose_rig_vectors
from freeavatar_server.images import encode_png
from freeavatar_server.synth.avatars import BUILTIN_AVATARS, BuiltinAvatar
from freeavatar_server.training.renderer.train import RendererTrainConfig, fit_renderer, psnr, ssim

TEST_SAMPLES = 300
GRID_COLUMNS = 6


def render_in_batches(avatar: BuiltinAvatar, rigs: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([avatar.render(rigs[i : i + 256], size) for i in range(0, len(rigs), 256)])


def evaluate_avatar(
    avatar: BuiltinAvatar,
    samples: int,
    config: RendererTrainConfig,
    on_progress: Callable[[float, dict[str, float]], None] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics on held-out rigs, and a (2 rows x GRID_COLUMNS) reference-over-neural picture."""
    size = config.image_size
    rigs = propose_rig_vectors(avatar.spec, samples, seed=config.seed)
    fit = fit_renderer(avatar.spec, rigs, render_in_batches(avatar, rigs, size), config, on_progress)
    test_rigs = propose_rig_vectors(avatar.spec, TEST_SAMPLES, seed=config.seed + 1)
    reference = render_in_batches(avatar, test_rigs, size)
    with torch.no_grad():
        neural = fit.model(torch.from_numpy(test_rigs))
    target = torch.from_numpy(reference).permute(0, 3, 1, 2).float() / 255
    metrics = {
        "psnr": psnr(neural, target),
        "ssim": ssim(neural, target),
        "train_seconds": fit.metrics["train_seconds"],
        "steps": fit.metrics["steps"],
        "samples": float(samples),
        "image_size": float(size),
    }
    neural_u8 = (neural.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    picks = np.linspace(0, TEST_SAMPLES - 1, GRID_COLUMNS).astype(int)
    grid = np.concatenate(
        [np.concatenate(list(reference[picks]), axis=1), np.concatenate(list(neural_u8[picks]), axis=1)]
    )
    return metrics, grid


def evaluate_builtin(
    names: list[str],
    samples: int,
    config: RendererTrainConfig,
    grid_path: Path | None,
    on_progress: Callable[[str, float], None] | None = None,
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    grids = []
    for name in names:
        avatar = BUILTIN_AVATARS[name]
        report = (lambda f, _m, n=name: on_progress(n, f)) if on_progress else None
        results[name], grid = evaluate_avatar(avatar, samples, replace(config), report)
        grids.append(grid)
    if grid_path is not None:
        grid_path.parent.mkdir(parents=True, exist_ok=True)
        grid_path.write_bytes(encode_png(np.concatenate(grids)))
    return results
