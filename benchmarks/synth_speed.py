"""Synthetic-world rendering speed on ONE CPU thread; prints JSON.

    .venv/bin/python benchmarks/synth_speed.py [--crops 512] [--frames 32]

crops/s: render_faces at 128x128 with full nuisance (background clutter, lighting, blur, noise,
JPEG), one call for all crops. frames/s: render_frames at 640x480 with a sampled face box per
frame. Each rate is the best of a few repeats, both per wall-clock second and per CPU second of
this process (the honest one-core figure when other jobs share the machine). Training batch:
CPU seconds for one batch of the encoder's recipe as its trainer's renderer draws it
(`render_stream_batch`: 128 faces at 160 px, 25% cel-shaded characters, 30% mascots, 30%
without nuisance, as half way through a run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def _rate(fn, n: int, repeats: int = 3) -> tuple[float, float]:
    """(items per wall second, items per CPU second), best of `repeats` after a warm-up."""
    fn()  # warm-up: allocator, lazy imports
    wall = cpu = float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return n / wall, n / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crops", type=int, default=512)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from freeavatar_server.synth.actors import render_faces, render_frames, sample_expressions
    from freeavatar_server.training.encoder.data import StreamSpec, render_stream_batch

    rng = np.random.default_rng(0)
    expr = sample_expressions(args.crops, rng)
    ids = rng.integers(0, 10**6, size=args.crops)
    crops = _rate(lambda: render_faces(expr, ids, size=args.size, seed=1), args.crops)
    crops_clean = _rate(
        lambda: render_faces(expr, ids, size=args.size, seed=1, nuisance=False), args.crops
    )
    fe, fi = expr[: args.frames], ids[: args.frames]
    frames = _rate(lambda: render_frames(fe, fi, seed=2), args.frames, repeats=2)
    recipe = StreamSpec(size=160, n_expressions=64, seed=5, steps=100, stylised=0.25, mascots=0.3)
    batch = _rate(lambda: render_stream_batch(recipe, 50), recipe.batch, repeats=2)
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "crop_size": args.size,
                "crops_per_s": round(crops[0], 1),
                "crops_per_cpu_s": round(crops[1], 1),
                "crops_per_s_no_nuisance": round(crops_clean[0], 1),
                "crops_per_cpu_s_no_nuisance": round(crops_clean[1], 1),
                "frames_640x480_per_s": round(frames[0], 1),
                "frames_640x480_per_cpu_s": round(frames[1], 1),
                "training_batch_cpu_s": round(recipe.batch / batch[1], 3),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "machine": f"{platform.machine()} {_cpu_model()}".strip(),
            }
        )
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


if __name__ == "__main__":
    main()
