"""Expression encoder inference speed on ONNX Runtime: ms per face at batch 1 and per face at
batch 8, one intra-op thread (the server's setting), CPU provider unless told otherwise. Each run
fetches what the live path fetches: the embedding, and the action units when the graph has them.

    python benchmarks/encoder_speed.py [--model path.onnx] [--threads 1] [--json]

Budget: <= 3 ms per face at batch 1 on one core. Results are recorded in docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def time_batch(sess, batch: int, size: int, *, warmup: int = 20, runs: int = 200) -> dict[str, float]:
    """Per-face latency statistics (ms) for repeated runs at one batch size."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, 3, size, size), dtype=np.float32)
    for _ in range(warmup):
        sess.run_with_units(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run_with_units(x)
        times.append((time.perf_counter() - t) * 1000 / batch)
    times.sort()
    return {
        "median_ms_per_face": round(statistics.median(times), 3),
        "p90_ms_per_face": round(times[int(0.9 * len(times))], 3),
        "min_ms_per_face": round(times[0], 3),
    }


def main() -> None:
    from freeavatar_server.inference.encoder import OnnxEncoder
    from freeavatar_server.inference.shipped import ENCODER_ONNX as DEFAULT_ONNX

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_ONNX)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--provider", default="CPUExecutionProvider")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sess = OnnxEncoder(args.model, threads=args.threads, provider=args.provider)
    result = {
        "model": str(args.model),
        "model_mb": round(args.model.stat().st_size / 1e6, 2),
        "input_size": sess.size,
        "unit_dim": sess.unit_dim,  # 0: the graph has no action-unit output
        "provider": sess.provider,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "batch1": time_batch(sess, 1, sess.size, runs=args.runs),
        "batch8": time_batch(sess, 8, sess.size, runs=max(20, args.runs // 4)),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['model']} ({result['model_mb']} MB, {sess.size}px, {sess.provider}, {args.threads} thread)")
    for key in ("batch1", "batch8"):
        r = result[key]
        print(f"  {key}: {r['median_ms_per_face']:.3f} ms/face median, p90 {r['p90_ms_per_face']:.3f}, min {r['min_ms_per_face']:.3f}")
    print(f"  budget 3 ms/face at batch 1: {'OK' if result['batch1']['median_ms_per_face'] <= 3.0 else 'OVER'}")


if __name__ == "__main__":
    main()
