"""Animator inference cost for the live pipeline: one frame (batch 1) per avatar, ONNX Runtime
(AnimatorRuntime, one thread) against torch under no_grad (one thread).

    .venv/bin/python benchmarks/animator_runtime.py [--models DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from freeavatar_server.inference.animator import AnimatorRuntime
from freeavatar_server.inference.shipped import ANIMATOR_DIR as MODELS_DIR
from freeavatar_server.training.animator.evaluate import SHARED_FILE
from freeavatar_server.training.animator.export import export_runtime
from freeavatar_server.training.animator.model import animator_inputs, load_animator


def per_call_us(fn, repeats: int) -> dict[str, float]:
    for _ in range(50):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    t = np.array(times) * 1e6
    return {"p50_us": round(float(np.percentile(t, 50)), 1), "p99_us": round(float(np.percentile(t, 99)), 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=Path, default=MODELS_DIR)
    p.add_argument("--repeats", type=int, default=3000)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:  # export fresh, leave the models dir as it is
        shutil.copy(args.models / SHARED_FILE, Path(tmp) / SHARED_FILE)
        export_runtime(Path(tmp))
        runtime = AnimatorRuntime.load(Path(tmp))
        model = load_animator(Path(tmp) / SHARED_FILE)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(1, 16)).astype(np.float32)
        # the action units too, for an animator that reads them (the runtime joins the parts)
        units = rng.normal(size=(1, runtime.unit_dim)).astype(np.float32) if runtime.unit_dim else None
        xt = animator_inputs(model.config, torch.from_numpy(x), None if units is None else torch.from_numpy(units))
        report = {}
        for avatar_id in runtime.avatar_ids:
            with torch.no_grad():
                torch_cost = per_call_us(lambda a=avatar_id: model(xt, a), args.repeats)
            report[avatar_id] = {
                "controls": len(runtime.control_names(avatar_id)),
                "onnx": per_call_us(lambda a=avatar_id: runtime.predict(x, a, units=units), args.repeats),
                "torch_no_grad": torch_cost,
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
