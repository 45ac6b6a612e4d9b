"""Train the face localiser on synthetic frames, then export the shipped ONNX model.

One command reproduces the shipped weights (about an hour on one busy CPU core):

    python -m freeavatar_server.training.face.train all --out runs/face --ship

`generate` renders frame shards to <out>/data (resumable: existing shards are kept), `fit`
trains on every shard present (it can start while `generate` still runs), `export` writes the
ONNX file and, with --ship, copies it to freeavatar_server/models/face_localiser.onnx.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from freeavatar_server.inference.face.detection import LocaliserConfig, decode, preprocess
from freeavatar_server.inference.shipped import FACE_LOCALISER_ONNX as SHIPPED
from freeavatar_server.training.face.data import MAX_IGNORED, MIN_VISIBLE, FrameSet, make_frames
from freeavatar_server.training.face.model import (
    FaceLocaliserNet,
    export_onnx,
    load_localiser,
    save_checkpoint,
)

SHARD = 64
# Held-out seeds live far from the training seeds so the two never share a frame.
EVAL_SEED = 10_000_000


@dataclass(frozen=True)
class TrainConfig:
    n_full: int = 24_000
    n_crop: int = 12_000
    steps: int = 10000
    batch: int = 48
    lr: float = 3e-3
    weight_decay: float = 1e-4
    crop_every: int = 3  # every third batch is tracking windows
    seed: int = 0


# ------------------------------------------------------------------------------------------
# data


def generate(out: Path, n_full: int, n_crop: int, crop_side: int, log_every: int = 20) -> None:
    """Render shards <out>/data/{full,crop}_<k>.npz until the requested counts exist."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    jobs = [("full", k) for k in range(math.ceil(n_full / SHARD))]
    jobs += [("crop", k) for k in range(math.ceil(n_crop / SHARD))]
    jobs.sort(key=lambda j: (j[1], j[0]))  # interleave, so early training sees both kinds
    t0 = time.time()
    for i, (kind, k) in enumerate(jobs):
        path = data / f"{kind}_{k:05d}.npz"
        if path.exists():
            continue
        side = 160 if kind == "full" else crop_side
        fs = make_frames(kind, SHARD, seed=k, width=side)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, images=fs.images, boxes=fs.boxes, visible=fs.visible)
        tmp.rename(path)
        if i % log_every == 0:
            print(f"shard {i}/{len(jobs)} {time.time() - t0:.0f}s", flush=True)


def load_shards(data: Path, kind: str) -> FrameSet:
    files = sorted(data.glob(f"{kind}_*[0-9].npz"))
    if not files:
        raise FileNotFoundError(f"no {kind} shards in {data}")
    parts = [np.load(f) for f in files]
    return FrameSet(
        np.concatenate([p["images"] for p in parts]),
        np.concatenate([p["boxes"] for p in parts]),
        np.concatenate([p["visible"] for p in parts]),
    )


def eval_set(kind: str, n: int, side: int) -> FrameSet:
    """Held-out frames (seeds disjoint from every training shard)."""
    parts = [make_frames(kind, SHARD, seed=EVAL_SEED + k, width=side) for k in range(n // SHARD)]
    return FrameSet(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.visible for p in parts]),
    )


# ------------------------------------------------------------------------------------------
# targets and loss


def make_targets(
    boxes: torch.Tensor, visible: torch.Tensor, height: int, width: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heatmap, its loss weight, box targets (log l,t,r,b / stride) and their weight.

    The heat peak sits on the centre of the VISIBLE part of the box (a face cut by the frame
    edge is still found where it is), while the box targets are the full box, so crop_face can
    pad what lies outside the frame.
    """
    b = len(boxes)
    h, w = height // stride, width // stride
    cy = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
    cx = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
    vx0 = boxes[:, 0].clamp(0, width)
    vy0 = boxes[:, 1].clamp(0, height)
    vx1 = boxes[:, 2].clamp(0, width)
    vy1 = boxes[:, 3].clamp(0, height)
    mx, my = ((vx0 + vx1) / 2).view(b, 1, 1), ((vy0 + vy1) / 2).view(b, 1, 1)
    sigma = (torch.maximum(vx1 - vx0, vy1 - vy0) / 6).clamp(min=3.0).view(b, 1, 1)
    d2 = (cx.view(1, 1, w) - mx) ** 2 + (cy.view(1, h, 1) - my) ** 2
    heat = torch.exp(-d2 / (2 * sigma**2))
    # the nearest cell is exactly 1: CenterNet's focal loss treats it as the positive
    flat = heat.view(b, -1)
    peak = flat.argmax(1)
    flat[torch.arange(b), peak] = 1.0
    present = (visible >= MIN_VISIBLE).view(b, 1, 1)
    ambiguous = ((visible >= MAX_IGNORED) & (visible < MIN_VISIBLE)).view(b, 1, 1)
    heat_weight = torch.where(ambiguous & (heat > 0.05), 0.0, 1.0)
    heat = torch.where(present, heat, torch.zeros_like(heat))
    gx, gy = cx.view(1, 1, w), cy.view(1, h, 1)
    dist = torch.stack([
        (gx - boxes[:, 0].view(b, 1, 1)).expand(b, h, w),
        (gy - boxes[:, 1].view(b, 1, 1)).expand(b, h, w),
        (boxes[:, 2].view(b, 1, 1) - gx).expand(b, h, w),
        (boxes[:, 3].view(b, 1, 1) - gy).expand(b, h, w),
    ], dim=1)  # fmt: skip
    inside = (dist > 0).all(dim=1)
    box_target = torch.log(dist.clamp(min=0.5) / stride)
    box_weight = heat * (heat > 0.3) * inside
    return heat, heat_weight, box_target, box_weight


def focal_loss(logit: torch.Tensor, heat: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of faces (min 1)."""
    p = torch.sigmoid(logit).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1.0).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - heat) ** 4 * (1 - pos)
    return ((pos_loss + neg_loss) * weight).sum() / pos.sum().clamp(min=1.0)


def loss_fn(out: torch.Tensor, boxes: torch.Tensor, visible: torch.Tensor, stride: int) -> dict:
    _, _, h, w = out.shape
    heat, hw, tgt, bw = make_targets(boxes, visible, h * stride, w * stride, stride)
    l_heat = focal_loss(out[:, 0], heat, hw)
    l_box = (F.smooth_l1_loss(out[:, 1:], tgt, reduction="none", beta=0.1).sum(1) * bw).sum()
    l_box = l_box / bw.sum().clamp(min=1.0)
    return {"heat": l_heat, "box": l_box, "total": l_heat + 2.0 * l_box}


# ------------------------------------------------------------------------------------------
# augmentation (photometric + flips; geometry stays exact)


def augment(
    images: np.ndarray, boxes: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(preprocess(images))
    b = torch.from_numpy(boxes.copy())
    n, _, _, w = x.shape
    flip = torch.from_numpy(rng.random(n) < 0.5)
    x[flip] = x[flip].flip(-1)
    fx0 = w - b[flip, 2]
    b[flip, 2] = w - b[flip, 0]
    b[flip, 0] = fx0
    # exposure, contrast, white balance, the odd grayscale camera, extra sensor noise
    gain = torch.from_numpy(rng.uniform(0.6, 1.4, (n, 1, 1, 1))).float()
    bias = torch.from_numpy(rng.uniform(-0.25, 0.25, (n, 1, 1, 1))).float()
    tint = torch.from_numpy(rng.uniform(0.85, 1.15, (n, 3, 1, 1))).float()
    x = (x * gain * tint + bias).clamp(-1, 1)
    gray = torch.from_numpy(rng.random(n) < 0.12)
    x[gray] = x[gray].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    noisy = torch.from_numpy(rng.random(n) < 0.25).view(n, 1, 1, 1)
    sigma = torch.from_numpy(rng.uniform(0.0, 0.08, (n, 1, 1, 1))).float()
    x = torch.where(noisy, (x + torch.randn_like(x) * sigma).clamp(-1, 1), x)
    return x, b


# ------------------------------------------------------------------------------------------
# evaluation


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (N, 4) boxes."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(union - inter, 1e-9)


@torch.no_grad()
def evaluate(model: FaceLocaliserNet, fs: FrameSet, stride: int, threshold: float = 0.5) -> dict:
    model.eval()
    dets = []
    for s in range(0, len(fs.images), 64):
        out = model(torch.from_numpy(preprocess(fs.images[s : s + 64]))).numpy()
        dets += decode(out, stride)
    conf = np.array([d.confidence for d in dets])
    pred = np.stack([d.box for d in dets])
    present = fs.visible >= MIN_VISIBLE
    absent = fs.visible < MAX_IGNORED
    iou = box_iou(pred, fs.boxes)
    found = (conf >= threshold) & (iou > 0.5)
    model.train()
    return {
        "recall_iou50": float(found[present].mean()),
        "mean_iou": float(iou[present].mean()),
        "false_positive_rate": float((conf[absent] >= threshold).mean()) if absent.any() else 0.0,
        "n_present": int(present.sum()),
        "n_absent": int(absent.sum()),
    }


# ------------------------------------------------------------------------------------------
# training


def fit(out: Path, cfg: TrainConfig, net_cfg: LocaliserConfig) -> Path:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = FaceLocaliserNet(net_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=max(0.05, 3.0 / cfg.steps)
    )  # (warm-up of at least 3 steps: OneCycleLR divides by zero on shorter ones)
    held_full = eval_set("full", 256, 160)
    held_crop = eval_set("crop", 128, net_cfg.crop_input)
    data = out / "data"
    full = crop = None
    history = []
    t0 = time.time()
    for step in range(cfg.steps):
        if step % 500 == 0:  # pick up shards the generator has written since
            full, crop = load_shards(data, "full"), load_shards(data, "crop")
        fs = crop if step % cfg.crop_every == cfg.crop_every - 1 else full
        idx = rng.integers(0, len(fs.images), cfg.batch)
        x, b = augment(fs.images[idx], fs.boxes[idx], rng)
        v = torch.from_numpy(fs.visible[idx])
        losses = loss_fn(model(x), b, v, net_cfg.stride)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(
                f"step {step} {time.time() - t0:.0f}s n={len(full.images)}+{len(crop.images)} "
                + " ".join(f"{k}={v.item():.4f}" for k, v in losses.items()),
                flush=True,
            )
        if (step + 1) % 1000 == 0 or step + 1 == cfg.steps:
            metrics = {
                "step": step + 1,
                "full": evaluate(model, held_full, net_cfg.stride),
                "crop": evaluate(model, held_crop, net_cfg.stride),
            }
            history.append(metrics)
            print(json.dumps(metrics), flush=True)
            save_checkpoint(model, net_cfg, out / "localiser.pt")
            (out / "history.json").write_text(json.dumps(history, indent=2))
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return out / "localiser.pt"


def export(out: Path, ship: bool) -> Path:
    model, cfg = load_localiser(out / "localiser.pt")
    path = out / "face_localiser.onnx"
    export_onnx(model, cfg, path)
    if ship:  # the .pt beside it keeps fine-tuning and the ONNX parity test possible
        SHIPPED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SHIPPED)
        shutil.copyfile(out / "localiser.pt", SHIPPED.with_suffix(".pt"))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["generate", "fit", "export", "all"])
    p.add_argument("--out", type=Path, default=Path("runs/face"))
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--n-full", type=int, default=TrainConfig.n_full)
    p.add_argument("--n-crop", type=int, default=TrainConfig.n_crop)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ship", action="store_true", help="copy the ONNX model into the package")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    net_cfg = LocaliserConfig()
    cfg = TrainConfig(n_full=a.n_full, n_crop=a.n_crop, steps=a.steps)
    if a.what in ("generate", "all"):
        generate(a.out, cfg.n_full, cfg.n_crop, net_cfg.crop_input)
    if a.what in ("fit", "all"):
        fit(a.out, cfg, net_cfg)
    if a.what in ("export", "all"):
        print(export(a.out, a.ship))


if __name__ == "__main__":
    main()
