"""Training for the expression encoder, in three stages that share one loop shape:

1. `mae`        masked-autoencoder pretraining on unlabeled face crops (any FacePool);
2. `triplet`    tuning with the symmetric triplet loss on expression comparison triplets,
                starting from the MAE backbone -> the shipped 16-d expression encoder;
3. `classifier` BASELINE ONLY: the same backbone, from the same MAE weights and for the same
                number of steps, trained to classify discrete emotion categories.

Runs single-process or under `torchrun` (DDP; gloo on CPU, NCCL on GPU). Each rank draws its
own batches from a generator seeded by (seed, rank, step) (synthetic renders by (seed, rank,
step // reuse)), so a resumed run sees exactly the batches it would have seen, and no sampler
state needs saving. Rank 0 writes checkpoints:
`<out>/<stage>.pt` (latest, with optimizer, for --resume) and `<out>/config.json`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from freeavatar_server.synth.actors import N_AU, mirror_permutation
from freeavatar_server.training.correlation import column_correlations
from freeavatar_server.training.encoder import data as D
from freeavatar_server.training.encoder.model import (
    EmotionClassifier,
    ExpressionEncoder,
    MaskedAutoencoder,
    ModelConfig,
)

STAGES = ("mae", "triplet", "classifier")
MIRROR = torch.from_numpy(mirror_permutation())
VAL_IDENTITY_OFFSET = 500_000  # validation identities: never in training, never in the final eval


class RunConfigError(ValueError):
    """A run its configuration cannot go on with (an unknown stage, another --reuse on resume,
    an --init encoder of another shape): the caller's to fix, where any other error inside
    training is a fault to report with its traceback."""


@dataclass
class TrainConfig:
    """Everything that defines a run; saved inside every checkpoint and as config.json."""

    out_dir: str = "runs/encoder"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    # data: synthetic world by default; a folder of images/videos and/or an FEC CSV otherwise
    images: str | None = None  # folder for MAE pretraining (replaces the synthetic pool there)
    fec_csv: str | None = None  # triplet CSV for tuning (replaces on-the-fly synthetic triplets)
    # synthetic batches (no --images / --fec-csv): rendered fresh by a child process, one for
    # every `reuse` steps
    clean_start: float = 0.5  # share of faces rendered without nuisance, in the first batch...
    clean_end: float = 0.1  # ...and in the last (a curriculum from easy to hard)
    stylised: float = 0.0  # share of people drawn as stylised characters (all stages)
    mascots: float = 0.0  # share drawn as mascots: critters, robots, blobs (synth.mascots)
    # MAE stage
    mae_steps: int = 800
    mae_batch: int = 128
    mae_lr: float = 1.5e-3
    mask_ratio: float = 0.75
    # triplet stage (also the step budget of the classifier baseline)
    triplet_steps: int = 4000
    triplet_batch: int = 128  # faces per step; every clear triplet among them is labelled
    triplet_lr: float = 1e-3
    # Dense supervision: the weight of an action-unit read-out's loss beside the triplet loss
    # (each unit standardised, so the small ones count as much as a smile). The units train the
    # encoder only. 0: triplets alone (the first shipped encoders).
    au_weight: float = 0.0
    # Start the triplet stage from this encoder checkpoint instead of the MAE backbone (a new
    # schedule from step 0: a fine-tune, unlike --resume, which continues a run's own one).
    init: str | None = None
    classifier_steps: int | None = 800  # None: triplet_steps
    classifier_batch: int = 128
    weight_decay: float = 0.05
    warmup: int = 100
    augment: bool = True
    threads: int = 1
    # Forward passes under bfloat16 autocast (weights, optimiser and losses stay float32): a step
    # took half the time on an AVX-512 BF16 CPU; untried on others (without BF16 instructions
    # bfloat16 is usually slower).
    bf16: bool = False
    # Steps each rendered synthetic batch trains (each with its own augmentation draw): the
    # renderer, on the other core, is slower than a bfloat16 step, so the trainer waited for it.
    reuse: int = 1
    log_every: int = 25
    val_every: int = 250
    val_triplets: int = 600
    ckpt_every: int = 250

    def __post_init__(self) -> None:
        if self.reuse < 1:
            raise RunConfigError(f"reuse must be at least 1 (steps per rendered batch), got {self.reuse}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if isinstance(kw.get("model"), dict):
            kw["model"] = ModelConfig.from_dict(kw["model"])
        return cls(**kw)


# ------------------------------------------------------------------------------------------
# distributed helpers


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), device=device)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Average float buffers (BatchNorm running statistics) over ranks. DDP keeps parameters
    identical through all-reduced gradients, but each rank's last forward updates its own
    running statistics; averaging them leaves every rank with the same, better estimate."""
    if d.world <= 1:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(d.world)
        else:
            dist.broadcast(buf, src=0)


def wrap_ddp(model: nn.Module, d: Dist) -> nn.Module:
    if d.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


# ------------------------------------------------------------------------------------------
# losses and augmentation


# For odd face o, which positions are anchor, positive, negative.
_APN = torch.tensor([[1, 2, 0], [0, 2, 1], [0, 1, 2]])


def symmetric_triplet_loss(emb: torch.Tensor, odd: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """emb (B, 3, D); odd (B,) the face labelled most different; margin (B,).
    L = max(0, |a-p| - |a-n| + m) + max(0, |p-a| - |p-n| + m): both faces of the similar pair
    must be closer to each other than to the odd one (FECNet / FreeAvatar)."""
    order = _APN.to(emb.device)[odd]
    a, p, n = (emb.gather(1, order[:, i, None, None].expand(-1, 1, emb.shape[2])).squeeze(1) for i in range(3))

    def dist_(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x - y) ** 2).sum(-1).add(1e-12).sqrt()  # eps: finite gradient at zero distance

    d_ap, d_an, d_pn = dist_(a, p), dist_(a, n), dist_(p, n)
    return (F.relu(d_ap - d_an + margin) + F.relu(d_ap - d_pn + margin)).mean()


def all_triplet_loss(emb: torch.Tensor, expr: torch.Tensor, classes: torch.Tensor, min_margin: float = 0.15) -> tuple[torch.Tensor, float]:
    """The symmetric triplet loss over every clear triplet in a batch of B faces.

    The simulated annotator labels each (a, p, n) whose ground-truth expression distances make
    (a, p) the closest pair by a relative margin above `min_margin` (what synth.triplets calls
    a clear triplet); loss max(0, |a-p| - |a-n| + m) + max(0, |p-a| - |p-n| + m) with m = 0.1
    when all three faces come from one expression class and 0.2 otherwise, averaged over the
    triplets that still violate it. B^3 triplets per step instead of a few hundred sampled
    ones: the dense signal is what lets a CPU-sized budget learn. Returns (loss, share of
    labelled triplets that are still wrong)."""
    b = emb.shape[0]
    g = torch.cdist(expr.double(), expr.double()).float()
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1).add(1e-12).sqrt()  # eps: finite gradient at 0
    g_ap, g_an, g_pn = g[:, :, None], g[:, None, :], g[None, :, :]
    worst = torch.maximum(torch.maximum(g_ap, g_an), g_pn)
    clear = (torch.minimum(g_an, g_pn) - g_ap) / (worst + 1e-6) > min_margin
    distinct = ~torch.eye(b, dtype=torch.bool)
    clear &= distinct[:, :, None] & distinct[:, None, :] & distinct[None, :, :]
    one_class = (classes[:, None, None] >= 0) & (classes[:, None, None] == classes[None, :, None]) & (classes[None, :, None] == classes[None, None, :])
    margin = torch.where(one_class, D.MARGINS[D.ONE_CLASS], D.MARGINS[D.TWO_CLASS])
    d_ap = d[:, :, None]
    losses = (F.relu(d_ap - d[:, None, :] + margin) + F.relu(d_ap - d[None, :, :] + margin))[clear]
    wrong = ((d_ap >= d[:, None, :]) | (d_ap >= d[None, :, :]))[clear]
    active = (losses > 0).sum().clamp(min=1)
    return losses.sum() / active, float(wrong.float().mean()) if wrong.numel() else 0.0


def triplet_correct(emb: np.ndarray, odd: np.ndarray) -> np.ndarray:
    """(T, 3, D) embeddings -> (T,) bool: right when d(a,p) < d(a,n) and d(a,p) < d(p,n)."""
    order = _APN.numpy()[odd]
    rows = np.arange(len(emb))[:, None]
    a, p, n = (emb[rows, order[:, i : i + 1]][:, 0] for i in range(3))
    d_ap = np.linalg.norm(a - p, axis=-1)
    return (d_ap < np.linalg.norm(a - n, axis=-1)) & (d_ap < np.linalg.norm(p - n, axis=-1))


def augment(x: torch.Tensor, gen: torch.Generator, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Nuisance the encoder must ignore: small scale/shift/rotation, brightness, contrast,
    colour cast. `flip` (B,) bool mirrors images; triplets pass one flag for all three faces
    because mirroring all of them keeps which two expressions are alike."""
    b = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    ang = (u(b) - 0.5) * math.radians(12)
    scale = 0.92 + 0.16 * u(b)
    tx, ty = (u(b) - 0.5) * 0.12, (u(b) - 0.5) * 0.12
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    sx = torch.where(flip, -1.0, 1.0) if flip is not None else torch.ones(b)
    theta = torch.stack([torch.stack([cos * sx, -sin, tx], 1), torch.stack([sin * sx, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (0.75 + 0.5 * u(b, 1, 1, 1)) + mean * (0.75 + 0.5 * u(b, 1, 1, 1))
    x = x * (0.9 + 0.2 * u(b, 3, 1, 1))
    return x.clamp(0, 1)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5% of base."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# ------------------------------------------------------------------------------------------
# data


def folder_pool(cfg: TrainConfig) -> D.FacePool | None:
    """The MAE pool when training on a folder of images or videos; None for synthetic data."""
    return D.load_folder_pool(Path(cfg.images), cfg.model.img_size) if cfg.images else None


def stream_spec(cfg: TrainConfig, d: Dist, stage: str, batch: int, steps: int) -> D.StreamSpec:
    return D.StreamSpec(
        size=cfg.model.img_size, n_expressions=max(2, batch // 2), seed=cfg.seed * 1000 + STAGES.index(stage),
        rank=d.rank, steps=-(-steps // cfg.reuse), clean_start=cfg.clean_start, clean_end=cfg.clean_end,
        stylised=cfg.stylised, mascots=cfg.mascots,
    )  # steps: the batches rendered, over which the nuisance curriculum runs


def validation_triplets(cfg: TrainConfig, d: Dist) -> D.TripletSet | None:
    """Held-out triplets on validation identities, for curves (rank 0 only)."""
    if not d.main or cfg.val_triplets <= 0 or cfg.fec_csv:
        return None
    return D.synthetic_eval_triplets(cfg.val_triplets, size=cfg.model.img_size, seed=cfg.seed + 77, identity_offset=VAL_IDENTITY_OFFSET)


@torch.no_grad()
def embed_images(fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch: int = 256) -> np.ndarray:
    out = [fn(D.to_tensor(images[s : s + batch])).float().cpu().numpy() for s in range(0, len(images), batch)]
    return np.concatenate(out)


def triplet_accuracy(fn: Callable[[torch.Tensor], torch.Tensor], ts: D.TripletSet) -> dict[str, float]:
    feats = embed_images(fn, ts.pool.images)
    ok = triplet_correct(feats[ts.index], ts.odd)
    return {"all": float(ok.mean()), "unambiguous": float(ok[~ts.ambiguous].mean())}


# ------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_path(cfg: TrainConfig, stage: str) -> Path:
    return Path(cfg.out_dir) / f"{stage}.pt"


def save_checkpoint(path: Path, *, cfg: TrainConfig, stage: str, step: int, model: nn.Module, opt, history: list, done: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "stage": stage,
        "step": step,
        "done": done,
        "config": cfg.to_dict(),
        "model_config": cfg.model.to_dict(),
        "model": model.state_dict(),
        "optimizer": opt.state_dict() if opt is not None else None,
        "history": history,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: an interrupted save never corrupts the last good checkpoint
    (path.parent / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def load_encoder(path: Path) -> ExpressionEncoder:
    """An ExpressionEncoder from a `triplet` or `mae` checkpoint (config read from the file)."""
    ck = load_checkpoint(path)
    mcfg = ModelConfig.from_dict(ck["model_config"])
    enc = ExpressionEncoder(mcfg)
    state = ck["model"]
    if ck["stage"] == "mae":
        # MAE trains only the backbone; the head stays at its seeded initialisation
        prefix = "encoder.backbone."
        enc.backbone.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    else:
        enc.load_state_dict(state)
    return enc.eval()


def load_classifier(path: Path) -> EmotionClassifier:
    ck = load_checkpoint(path)
    mcfg = ModelConfig.from_dict(ck["model_config"])
    model = EmotionClassifier(mcfg, ck["model"]["fc.weight"].shape[0])
    # a classifier from before head_norm keeps the fresh (identity) norm: its features, the
    # baseline's, are the backbone's and do not pass through it
    model.load_state_dict({**model.state_dict(), **ck["model"]})
    return model.eval()


# ------------------------------------------------------------------------------------------
# the loop


@dataclass
class StageSpec:
    """What differs between stages: the model, how one batch's loss is computed, the budget."""

    name: str
    model: nn.Module
    steps: int
    lr: float
    # (model, step, rng, gen, stream batch or None) -> (loss, extra numbers to log)
    batch_loss: Callable[[nn.Module, int, np.random.Generator, torch.Generator, tuple | None], tuple[torch.Tensor, dict]]
    validate: Callable[[nn.Module], dict] | None = None
    stream: D.StreamSpec | None = None  # synthetic batches rendered ahead, one per `reuse` steps


def run_stage(cfg: TrainConfig, spec: StageSpec, d: Dist, *, resume: bool, on_log: Callable[[dict], None] | None = None) -> list[dict]:
    model = spec.model.to(d.device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    start, history = 0, []
    path = checkpoint_path(cfg, spec.name)
    if resume and path.exists():
        ck = load_checkpoint(path)
        trained_with = ck["config"].get("reuse", 1)
        if trained_with != cfg.reuse:  # it sets which batch each step trains on
            raise RunConfigError(f"{path} was trained with reuse {trained_with}; a resumed run keeps it (asked for {cfg.reuse})")
        model.load_state_dict(ck["model"])
        if ck.get("optimizer") is not None:  # a shipped (slim) checkpoint has none: a warm restart
            opt.load_state_dict(ck["optimizer"])
        start, history = ck["step"], ck["history"]
        if start >= spec.steps:  # finished; a longer --*-steps extends it instead
            return history
    ddp = wrap_ddp(model, d)
    # fresh synthetic batches rendered ahead by a child process, stopped however the loop ends
    with D.SyntheticStream(spec.stream, start // cfg.reuse) if spec.stream is not None else nullcontext() as stream:
        progress = _progress(d, spec.name, spec.steps, start)
        t0, t_prev, seen = time.time(), time.time(), 0
        running: dict[str, float] = {}
        batch = None
        for step in range(start, spec.steps):
            lr = lr_at(step, spec.steps, spec.lr, cfg.warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            rng = np.random.default_rng([cfg.seed, d.rank, step, STAGES.index(spec.name)])
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            torch.manual_seed(int(rng.integers(2**62)))  # MAE masks come from the global generator
            ddp.train()
            if stream is not None and (batch is None or step % cfg.reuse == 0):
                batch = stream.get(step // cfg.reuse)
            with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss, extra = spec.batch_loss(ddp, step, rng, gen, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            for k, v in {"loss": float(loss.detach()), **extra}.items():
                running[k] = running.get(k, 0.0) + v
            seen += 1
            done = step + 1 == spec.steps
            if (step + 1) % cfg.log_every == 0 or done:
                rec = {"step": step + 1, "lr": lr, "time": round(time.time() - t0, 1)}
                rec.update({k: round(v / seen, 5) for k, v in running.items()})
                rec["sec_per_step"] = round((time.time() - t_prev) / seen, 3)
                running, seen, t_prev = {}, 0, time.time()
                if spec.validate is not None and d.main and ((step + 1) % cfg.val_every == 0 or done):
                    model.eval()
                    rec.update(spec.validate(model))
                if d.main:
                    history.append(rec)
                    if on_log:
                        on_log(rec)
                    progress.log(rec)
            progress.advance()
            if (step + 1) % cfg.ckpt_every == 0 or done:
                sync_buffers(model, d)  # collective: every rank takes part
            if d.main and ((step + 1) % cfg.ckpt_every == 0 or done):
                save_checkpoint(path, cfg=cfg, stage=spec.name, step=step + 1, model=model, opt=opt, history=history, done=done)
        progress.stop()
    barrier(d)
    return history


class _progress:
    """rich progress bar on rank 0; silent elsewhere."""

    def __init__(self, d: Dist, name: str, total: int, start: int) -> None:
        self.bar = None
        if d.main:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))
            self.task = self.bar.add_task("", total=total, completed=start)
            self.bar.start()

    def advance(self) -> None:
        if self.bar:
            self.bar.advance(self.task)

    def log(self, rec: dict) -> None:
        if self.bar:
            desc = " ".join(f"{k}={v}" for k, v in rec.items() if k not in ("step", "time"))
            self.bar.update(self.task, description=desc)
            self.bar.console.log(json.dumps(rec))

    def stop(self) -> None:
        if self.bar:
            self.bar.stop()


# ------------------------------------------------------------------------------------------
# stages


def mae_stage(cfg: TrainConfig, pool: D.FacePool | None, d: Dist) -> StageSpec:
    """Masked-autoencoder pretraining on a folder's faces, or on fresh synthetic faces."""
    torch.manual_seed(cfg.seed)
    model = MaskedAutoencoder(cfg.model)

    def batch_loss(m: nn.Module, step: int, rng: np.random.Generator, gen: torch.Generator, batch):
        images = batch[0] if batch is not None else pool.images[rng.integers(0, len(pool), cfg.mae_batch)]
        x = D.to_tensor(images)
        if cfg.augment:
            x = augment(x, gen, flip=torch.rand(len(x), generator=gen) < 0.5)
        loss, _ = m(x, cfg.mask_ratio)
        return loss, {}

    stream = None if pool is not None else stream_spec(cfg, d, "mae", cfg.mae_batch, cfg.mae_steps)
    return StageSpec("mae", model, cfg.mae_steps, cfg.mae_lr, batch_loss, stream=stream)


def _init_from_mae(cfg: TrainConfig, backbone: nn.Module) -> None:
    path = checkpoint_path(cfg, "mae")
    if not path.exists():
        raise RunConfigError(f"{path} does not exist: run the mae stage first, or start from an encoder with --init")
    backbone.load_state_dict(load_encoder(path).backbone.state_dict())


def _augment_batch(cfg: TrainConfig, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, bool]:
    """The augmented batch, and whether it was mirrored."""
    if not cfg.augment:
        return x, False
    # one mirror decision for the whole batch: mirroring every face keeps which expressions
    # are alike (the mirror swaps left and right action units, an isometry of AU space);
    # mirroring some of them would not
    mirrored = bool(torch.rand(1, generator=gen) < 0.5)
    return augment(x, gen, flip=torch.full((len(x),), mirrored)), mirrored


def _init_from_encoder(path: Path, model: ExpressionEncoder) -> None:
    """Every weight of an earlier encoder of the same architecture; an action-unit head it
    lacks starts fresh. The crop size may differ: no weight depends on it (the conv stem
    slides, and the token positions are fixed sin-cos, computed for this model's grid). So may
    the depth, when this model is deeper: the blocks it adds after the earlier ones start as the
    identity (their residual branches' output layers zero), so training starts from the earlier
    encoder's function and grows from there (Net2Net's idea)."""
    earlier = load_encoder(path)
    state = earlier.state_dict()
    if model.au_head is None:  # a run without the read-out takes the backbone and embedding alone
        state = {k: v for k, v in state.items() if not k.startswith("au_head.")}
    added = range(earlier.cfg.depth, model.cfg.depth)
    new_blocks = tuple(f"backbone.blocks.{i}." for i in added)
    other = f"{path} is another architecture than this run's model (its config differs)"
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a weight of another shape (a wider or narrower model)
        raise RunConfigError(other) from error
    if unexpected or any(not k.startswith(("au_head.", *new_blocks)) for k in missing):
        raise RunConfigError(other)
    with torch.no_grad():
        for i in added:
            block = model.backbone.blocks[i]
            for layer in (block.attn.proj, block.mlp[-1]):
                layer.weight.zero_()
                layer.bias.zero_()


@dataclass(frozen=True)
class UnitScale:
    """Each action unit's mean and spread over the training expressions: the read-out learns
    standardised units, so a dimple's small range weighs as much as a jaw drop's."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of_training_expressions(cls, seed: int, n: int = 20_000) -> UnitScale:
        expr, _ = D.stream_expressions(n, np.random.default_rng([seed, 99]))
        return cls(torch.from_numpy(expr.mean(0)).float(), torch.from_numpy(expr.std(0)).float().clamp(min=1e-3))

    def standardise(self, expr: torch.Tensor) -> torch.Tensor:
        return (expr - self.mean) / self.std


def triplet_stage(cfg: TrainConfig, val: D.TripletSet | None, d: Dist, model: nn.Module | None = None) -> StageSpec:
    """Triplet tuning from the MAE backbone (or `init`): rows of an FEC CSV, or every clear
    triplet among fresh synthetic faces labelled by the simulated annotator, and with
    `au_weight` the faces' action units through the read-out. `model`: another network to tune
    the same way (research: it takes crops as the encoder does and answers `m(x)` and
    `m(x, with_units=True)`), instead of the encoder `cfg.model` describes."""
    torch.manual_seed(cfg.seed + 1)
    if model is not None and cfg.init:
        raise ValueError("triplet_stage takes a model or an init checkpoint, not both")
    if model is None:
        model = ExpressionEncoder(cfg.model)
        if cfg.init:
            _init_from_encoder(Path(cfg.init), model)
        else:
            _init_from_mae(cfg, model.backbone)
    dense = cfg.au_weight > 0
    if dense and (cfg.model.au_units != N_AU or cfg.fec_csv):
        raise RunConfigError(f"au_weight needs synthetic triplets and model.au_units = {N_AU}")
    scale = UnitScale.of_training_expressions(cfg.seed) if dense else None
    fec = D.load_fec_csv(Path(cfg.fec_csv), cfg.model.img_size) if cfg.fec_csv else None
    margins = torch.tensor([0.0, D.MARGINS[1], D.MARGINS[2], D.MARGINS[3]])

    def fec_loss(m: nn.Module, rng: np.random.Generator, gen: torch.Generator):
        rows = rng.integers(0, len(fec), cfg.triplet_batch // 3)
        # embed each distinct face once; every triplet then indexes into the batch
        faces, local = np.unique(fec.index[rows].reshape(-1), return_inverse=True)
        emb = m(_augment_batch(cfg, D.to_tensor(fec.pool.images[faces]), gen)[0]).float()[torch.from_numpy(local.reshape(-1, 3))]
        odd = fec.odd[rows]
        loss = symmetric_triplet_loss(emb, torch.from_numpy(odd), margins[torch.from_numpy(fec.kind[rows])])
        return loss, {"train_acc": float(triplet_correct(emb.detach().numpy(), odd).mean())}

    def batch_loss(m: nn.Module, step: int, rng: np.random.Generator, gen: torch.Generator, batch):
        if batch is None:
            return fec_loss(m, rng, gen)
        images, expr, classes = batch
        (x, mirrored), units = _augment_batch(cfg, D.to_tensor(images), gen), torch.from_numpy(expr)
        if not dense:
            emb = m(x).float()  # losses in float32 under --bf16 too
            loss, wrong = all_triplet_loss(emb, units, torch.from_numpy(classes))
            return loss, {"train_acc": round(1.0 - wrong, 4)}
        emb, read = (out.float() for out in m(x, with_units=True))
        loss, wrong = all_triplet_loss(emb, units, torch.from_numpy(classes))
        seen = units[:, MIRROR] if mirrored else units  # a mirrored face's left units are its right
        unit_loss = F.mse_loss(read, scale.standardise(seen))
        return loss + cfg.au_weight * unit_loss, {"train_acc": round(1.0 - wrong, 4), "unit_loss": round(float(unit_loss.detach()), 4)}

    def validate(m: nn.Module) -> dict:
        r = triplet_accuracy(m, val)
        out = {"val_acc_all": round(r["all"], 4), "val_acc_unamb": round(r["unambiguous"], 4)}
        if dense:
            read = embed_images(lambda x: m(x, with_units=True)[1], val.pool.images)
            out["val_unit_r"] = round(float(np.nanmean(column_correlations(read, val.pool.expressions))), 4)
        return out

    stream = None if fec is not None else stream_spec(cfg, d, "triplet", cfg.triplet_batch, cfg.triplet_steps)
    return StageSpec("triplet", model, cfg.triplet_steps, cfg.triplet_lr, batch_loss, validate if val else None, stream)


def classifier_stage(cfg: TrainConfig, d: Dist) -> StageSpec:
    """BASELINE ONLY: the same backbone classifying emotion categories derived from synthetic
    ground truth (the paper's "classification features")."""
    torch.manual_seed(cfg.seed + 2)
    model = EmotionClassifier(cfg.model, len(D.emotion_categories()))
    _init_from_mae(cfg, model.backbone)
    steps = cfg.classifier_steps or cfg.triplet_steps

    def batch_loss(m: nn.Module, step: int, rng: np.random.Generator, gen: torch.Generator, batch):
        images, expr, _ = batch
        x = augment(D.to_tensor(images), gen) if cfg.augment else D.to_tensor(images)  # no flips
        logits = m(x)
        y = torch.from_numpy(D.categorise(expr))
        return F.cross_entropy(logits, y), {"train_acc": float((logits.argmax(1) == y).float().mean())}

    return StageSpec("classifier", model, steps, cfg.triplet_lr, batch_loss, stream=stream_spec(cfg, d, "classifier", cfg.classifier_batch, steps))


@dataclass
class TrainResult:
    histories: dict[str, list[dict]]  # per stage, rank 0 only (empty lists elsewhere)
    models: dict[str, nn.Module]  # this rank's trained model per stage


def train(cfg: TrainConfig, stages: tuple[str, ...] = ("mae", "triplet", "classifier"), *, resume: bool = False) -> TrainResult:
    """Run the requested stages in order. A stage this config cannot run is refused before any
    stage trains."""
    unknown = [name for name in stages if name not in STAGES]
    if unknown:
        raise RunConfigError(f"unknown stage {unknown[0]!r}; choose from {STAGES}")
    if "classifier" in stages and (cfg.fec_csv or cfg.images):
        raise RunConfigError("the classification baseline needs the synthetic world's ground truth")
    torch.set_num_threads(cfg.threads)
    d = init_distributed()
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    if d.main:
        (Path(cfg.out_dir) / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    result = TrainResult({}, {})
    for name in stages:
        if name == "mae":
            spec = mae_stage(cfg, folder_pool(cfg), d)
        elif name == "triplet":
            spec = triplet_stage(cfg, validation_triplets(cfg, d), d)
        else:  # "classifier"
            spec = classifier_stage(cfg, d)
        log_file = Path(cfg.out_dir) / f"history_{name}.jsonl"

        def on_log(rec: dict, log_file: Path = log_file) -> None:
            with open(log_file, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

        result.histories[name] = run_stage(cfg, spec, d, resume=resume, on_log=on_log)
        result.models[name] = spec.model
    return result
