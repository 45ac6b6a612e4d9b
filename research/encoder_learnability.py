"""Can a small CNN learn expression from the synthetic crops at all, within a CPU budget?

Supervised action-unit regression with a fresh synthetic batch every step (so it cannot
memorise), scored by held-out R^2 on identities never seen. A diagnostic for the expression
encoder (CHANGELOG.md, 2026-11-24), not a training method: the encoder itself never
sees action units.

    .venv/bin/python research/encoder_learnability.py --size 64 --seconds 240 --nuisance
    .venv/bin/python research/encoder_learnability.py --size 64 --seconds 240 --no-nuisance
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from freeavatar_server.synth.actors import render_faces, sample_expressions


def faces(n: int, rng: np.random.Generator, size: int, nuisance: bool, identities: tuple[int, int]):
    expressions = sample_expressions(n, rng)
    ids = rng.integers(*identities, n)
    seed = int(rng.integers(1 << 30))
    batch = render_faces(expressions, ids, size=size, seed=seed, nuisance=nuisance)
    return torch.from_numpy(batch.images).permute(0, 3, 1, 2).float() / 255, expressions


def cnn(outputs: int, width: int = 32) -> nn.Module:
    layers: list[nn.Module] = []
    channels = [3, width, width, 2 * width, 2 * width, 4 * width, 4 * width]
    for i, (c_in, c_out) in enumerate(zip(channels, channels[1:], strict=False)):
        layers += [nn.Conv2d(c_in, c_out, 3, 2 if i % 2 == 0 or i == 5 else 1, 1), nn.GroupNorm(8, c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], outputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--nuisance", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x_test, y_test = faces(600, np.random.default_rng(99), args.size, args.nuisance, (10**7, 10**7 + 10**6))
    model = cnn(y_test.shape[1])
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    started, step = time.time(), 0
    while time.time() - started < args.seconds:
        x, y = faces(48, rng, args.size, args.nuisance, (0, 10**6))
        loss = ((model(x) - torch.from_numpy(y)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 100 == 0:
            with torch.no_grad():
                predicted = model(x_test).numpy()
            r2 = 1 - ((predicted - y_test) ** 2).sum(0) / ((y_test - y_test.mean(0)) ** 2).sum(0)
            print(
                f'{{"step": {step}, "seconds": {time.time() - started:.0f}, '
                f'"r2_mean": {r2.mean():.3f}, "r2_best5": {np.round(np.sort(r2)[-5:], 2).tolist()}}}',
                flush=True,
            )


if __name__ == "__main__":
    main()
