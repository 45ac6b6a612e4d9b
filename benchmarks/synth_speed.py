"""Synthetic-world rendering speed on ONE CPU thread; prints JSON.

    .venv/bin/python benchmarks/synth_speed.py [--crops 512] [--frames 32]

crops/s: render_faces at 128x128 with full nuisance (background clutter, lighting, blur, noise,
JPEG), batches of 64. frames/s: render_frames at 640x480 with a sampled face box per frame.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch


def _rate(fn, n: int, repeats: int = 3) -> float:
    fn()  # warm-up: allocator, lazy imports
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crops", type=int, default=512)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from freeavatar_server.synth.actors import render_faces, render_frames, sample_expressions

    rng = np.random.default_rng(0)
    expr = sample_expressions(args.crops, rng)
    ids = rng.integers(0, 10**6, size=args.crops)
    crops = _rate(lambda: render_faces(expr, ids, size=args.size, seed=1), args.crops)
    crops_clean = _rate(lambda: render_faces(expr, ids, size=args.size, seed=1, nuisance=False), args.crops)
    fe, fi = expr[: args.frames], ids[: args.frames]
    frames = _rate(lambda: render_frames(fe, fi, seed=2), args.frames, repeats=2)
    print(json.dumps({
        "threads": torch.get_num_threads(),
        "crop_size": args.size,
        "crops_per_s": round(crops, 1),
        "crops_per_s_no_nuisance": round(crops_clean, 1),
        "frames_640x480_per_s": round(frames, 1),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }))


if __name__ == "__main__":
    main()
