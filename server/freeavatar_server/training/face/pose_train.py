"""Train the head-pose regressor on synthetic crops, then export the shipped ONNX model.

One command reproduces the shipped weights (about 8 minutes on one busy CPU core):

    python -m freeavatar_server.training.face.pose_train --out runs/pose --ship

Two kinds of training crop, both with the full synthetic nuisance (light, clutter, blur, noise,
JPEG, gaze, framing jitter):

* "faces": `render_faces` crops rendered at the pipeline's crop size (96 px), identities
  0..499,999. Their framing is what the expression encoder trains on.
* "frames": what the pipeline really feeds: a `render_frames` camera frame, cut with
  `crop_face` around the exact face box jittered the way a tracker's box wanders (centre
  +-4%, size +-5% of the face), shrunk to 96 px by the same warp.

Pose ground truth comes from the synthetic world (as the face localiser's boxes do); it is not
expression ground truth. Rendered data is cached in <out>/data (resumable); held-out crops use
identities >= 1,000,000 and seeds no training shard uses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from freeavatar_server.inference.face.crop import crop_face
from freeavatar_server.inference.face.detection import preprocess
from freeavatar_server.inference.face.pose import DEFAULT_MODEL, PoseConfig
from freeavatar_server.synth.actors import render_faces, render_frames, sample_expressions
from freeavatar_server.training.face.model import save_checkpoint
from freeavatar_server.training.face.pose_model import HeadPoseNet, export_onnx, load_pose_model

SHARD = 256
TRAIN_IDENTITIES = 500_000
HELD_OUT_IDENTITY = 1_000_000  # held-out identities are >= this
EVAL_SEED = 10_000_000  # held-out shard seeds start here, far from every training shard
FRAME_SIDE = 224  # camera frames for "frames" crops: small, so rendering them stays cheap


@dataclass(frozen=True)
class TrainConfig:
    n_faces: int = 24_576
    n_frames: int = 3_072
    steps: int = 4000
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    frames_share: float = 0.25  # share of each batch drawn from the pipeline-cut crops
    seed: int = 0


@dataclass
class PoseSet:
    crops: np.ndarray  # (N, S, S, 3) uint8
    poses: np.ndarray  # (N, 3) float32 yaw, pitch, roll degrees


# ------------------------------------------------------------------------------------------
# data


def render_shard(kind: str, seed: int, n: int, side: int, identities: tuple[int, int]) -> PoseSet:
    """n crops of `kind` ("faces" or "frames"), a pure function of (kind, seed)."""
    rng = np.random.default_rng([seed, 0 if kind == "faces" else 1])
    ids = rng.integers(*identities, n)
    expr = sample_expressions(n, rng)
    if kind == "faces":
        batch = render_faces(expr, ids, size=side, seed=seed)
        return PoseSet(batch.images, batch.poses)
    # a face 27-50% of the frame wide: crops of ~100-190 px, shrunk to `side` as live
    width = FRAME_SIDE * rng.uniform(0.27, 0.5, n)
    cx = FRAME_SIDE * rng.uniform(0.35, 0.65, n)
    cy = FRAME_SIDE * rng.uniform(0.4, 0.6, n)
    boxes = np.stack([cx - width / 2, cy - 0.65 * width, cx + width / 2, cy + 0.65 * width], 1)
    seeds = rng.integers(0, 2**62, n)
    batch = render_frames(
        expr, ids, width=FRAME_SIDE, height=FRAME_SIDE, face_boxes=boxes, sample_seeds=seeds
    )
    crops = np.stack([
        crop_face(image, jitter_box(box, rng), side) for image, box in zip(batch.images, batch.boxes, strict=True)
    ])  # fmt: skip
    return PoseSet(crops, batch.poses)


def jitter_box(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A face box as a tracker reports it: the exact box, shifted and resized a little."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + rng.normal(0, 0.04) * w, (y0 + y1) / 2 + rng.normal(0, 0.04) * w
    k = np.exp(rng.normal(0, 0.05))
    return np.array([cx - k * w / 2, cy - k * h / 2, cx + k * w / 2, cy + k * h / 2])


def generate(out: Path, kind: str, n: int, side: int, progress) -> PoseSet:  # progress: rich
    """Render (or reuse) <out>/data/<kind>_<k>.npz shards until n crops exist."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    shards = -(-n // SHARD)
    task = progress.add_task(f"render {kind}", total=shards)
    parts = []
    for k in range(shards):
        path = data / f"{kind}_{k:05d}.npz"
        if not path.exists():
            part = render_shard(kind, k, SHARD, side, (0, TRAIN_IDENTITIES))
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, crops=part.crops, poses=part.poses)
            tmp.rename(path)
        with np.load(path) as f:
            parts.append(PoseSet(f["crops"], f["poses"]))
        progress.advance(task)
    return concat(parts)


def held_out(kind: str, n: int, side: int) -> PoseSet:
    """Held-out crops: unseen identities, unseen seeds."""
    parts = [
        render_shard(kind, EVAL_SEED + k, min(SHARD, n - k * SHARD), side, (HELD_OUT_IDENTITY, 2**31))
        for k in range(-(-n // SHARD))
    ]  # fmt: skip
    return concat(parts)


def concat(parts: list[PoseSet]) -> PoseSet:
    return PoseSet(
        np.concatenate([p.crops for p in parts]), np.concatenate([p.poses for p in parts])
    )


# ------------------------------------------------------------------------------------------
# training


def augment(
    crops: np.ndarray, poses: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror half the batch (a mirrored face has yaw and roll negated, pitch kept) and vary
    exposure, contrast and white balance beyond what the renderer does."""
    n = len(crops)
    x = torch.from_numpy(preprocess(crops))
    y = torch.from_numpy(poses.astype(np.float32))
    flip = torch.from_numpy(rng.random(n) < 0.5)
    x[flip] = x[flip].flip(-1)
    y[flip] = y[flip] * torch.tensor([-1.0, 1.0, -1.0])
    gain = torch.from_numpy(rng.uniform(0.7, 1.3, (n, 1, 1, 1))).float()
    bias = torch.from_numpy(rng.uniform(-0.2, 0.2, (n, 1, 1, 1))).float()
    tint = torch.from_numpy(rng.uniform(0.9, 1.1, (n, 3, 1, 1))).float()
    return (x * gain * tint + bias).clamp(-1, 1), y


@torch.no_grad()
def predict(model: HeadPoseNet, crops: np.ndarray) -> np.ndarray:
    model.eval()
    out = np.concatenate([
        model(torch.from_numpy(preprocess(crops[s : s + 256]))).numpy() for s in range(0, len(crops), 256)
    ])  # fmt: skip
    model.train()
    return out


def mean_abs_error(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = np.abs(pred - truth).mean(0)
    return {axis: round(float(e), 3) for axis, e in zip(("yaw", "pitch", "roll"), err, strict=True)}


def evaluate(model: HeadPoseNet, sets: dict[str, PoseSet]) -> dict[str, dict[str, float]]:
    return {name: mean_abs_error(predict(model, s.crops), s.poses) for name, s in sets.items()}


def fit(
    faces: PoseSet, frames: PoseSet, held: dict[str, PoseSet], cfg: TrainConfig, net_cfg: PoseConfig,
    out: Path, progress,
) -> tuple[HeadPoseNet, list[dict]]:  # fmt: skip
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = HeadPoseNet(net_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=max(0.05, 3.0 / cfg.steps)
    )
    n_frames = round(cfg.batch * cfg.frames_share)
    history: list[dict] = []
    task = progress.add_task("fit", total=cfg.steps)
    for step in range(cfg.steps):
        i = rng.integers(0, len(faces.crops), cfg.batch - n_frames)
        j = rng.integers(0, len(frames.crops), n_frames)
        x, y = augment(
            np.concatenate([faces.crops[i], frames.crops[j]]),
            np.concatenate([faces.poses[i], frames.poses[j]]), rng,
        )  # fmt: skip
        # smooth L1 in units of the pose range: an L1 (MAE) objective, quadratic near zero
        loss = F.smooth_l1_loss(model.normalised(x), y / model.scale, beta=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        progress.update(task, advance=1, description=f"fit loss {loss.item():.4f}")
        if (step + 1) % 1000 == 0 or step + 1 == cfg.steps:
            metrics = {"step": step + 1, "held_out_mae_deg": evaluate(model, held)}
            history.append(metrics)
            progress.console.print(json.dumps(metrics))
            save_checkpoint(model, net_cfg, out / "pose.pt")
    return model.eval(), history


def main(argv: list[str] | None = None) -> None:
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/pose"))
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--n-faces", type=int, default=TrainConfig.n_faces)
    p.add_argument("--n-frames", type=int, default=TrainConfig.n_frames)
    p.add_argument("--held-out", type=int, default=512, help="held-out crops of each kind")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ship", action="store_true", help="copy the ONNX model into the package")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    net_cfg = PoseConfig()
    cfg = TrainConfig(n_faces=a.n_faces, n_frames=a.n_frames, steps=a.steps)
    a.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns) as progress:
        faces = generate(a.out, "faces", cfg.n_faces, net_cfg.crop_input, progress)
        frames = generate(a.out, "frames", cfg.n_frames, net_cfg.crop_input, progress)
        held = {
            kind: held_out(kind, a.held_out, net_cfg.crop_input) for kind in ("faces", "frames")
        }
        model, history = fit(faces, frames, held, cfg, net_cfg, a.out, progress)
    zero = {kind: mean_abs_error(np.zeros_like(s.poses), s.poses) for kind, s in held.items()}
    report = {
        "train_config": asdict(cfg), "model_config": asdict(net_cfg),
        "held_out_mae_deg": history[-1]["held_out_mae_deg"], "zero_predictor_mae_deg": zero,
        "history": history, "seconds": round(time.time() - started),
    }  # fmt: skip
    (a.out / "report.json").write_text(json.dumps(report, indent=2))
    onnx_path = a.out / "head_pose.onnx"
    export_onnx(*load_pose_model(a.out / "pose.pt"), onnx_path)
    if a.ship:  # the .pt beside it keeps fine-tuning and the ONNX parity test possible
        shutil.copyfile(onnx_path, DEFAULT_MODEL)
        shutil.copyfile(a.out / "pose.pt", DEFAULT_MODEL.with_suffix(".pt"))
    print(
        json.dumps(
            {k: report[k] for k in ("held_out_mae_deg", "zero_predictor_mae_deg", "seconds")}
        )
    )


if __name__ == "__main__":
    main()
