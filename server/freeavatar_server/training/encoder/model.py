"""The expression foundation model: a small ViT encoder, its masked-autoencoder decoder for
pretraining, and the 16-d L2-normalised expression head (FreeAvatar / FECNet style).

Sized for the inference budget (<= 3 ms per face on one CPU thread in ONNX Runtime) and for
training on a CPU: 96 px input (mouth corners and lids need more than 64 px), a BatchNorm conv
stem down to 16 px tokens (6x6 = 36), width 128, 4 blocks. Attention is written out by hand
(no fused kernels) so the ONNX graph is plain MatMul/Softmax that every runtime handles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Pixel statistics used to standardise inputs inside the network, so callers (and the ONNX
# graph) take plain RGB in [0, 1]. ImageNet values: close enough for faces and fixed forever.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; stored in every checkpoint so weights are self-describing."""

    img_size: int = 96
    patch: int = 16
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    embed_dim: int = 16  # the expression embedding (FreeAvatar uses 16-d)
    decoder_dim: int = 96
    decoder_depth: int = 2
    decoder_heads: int = 4
    # "patch": the plain ViT linear patch embedding. "conv": a small strided-conv stem that ends
    # at the same token grid (ViT with an early-convolution stem, Xiao et al. 2021): it learns
    # small local detail (mouth corners, lids) much faster on CPU-sized budgets.
    stem: str = "conv"
    # A linear read-out of the action units from the pooled features, trained beside the
    # triplet head (dense supervision: every face tells every unit); the ONNX export serves it
    # as a second output, `units`, for animators that read it. 0: none.
    au_units: int = 0

    @property
    def n_patches(self) -> int:
        return (self.img_size // self.patch) ** 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """(grid*grid, dim) fixed 2-D sine-cosine position embedding (as in MAE): no parameters to
    learn, and it stays meaningful for the masked subsets the encoder sees in pretraining."""
    assert dim % 4 == 0, "position embedding needs dim divisible by 4"
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        out = np.outer(coord, omega)
        parts += [np.sin(out), np.cos(out)]
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def random_masking(x: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random (1 - ratio) subset of tokens per sample (MAE). Returns kept tokens, the
    binary mask over all tokens (1 = hidden) and the permutation that restores token order."""
    b, n, c = x.shape
    keep = max(1, int(round(n * (1 - ratio))))
    noise = torch.rand(b, n, device=x.device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, c))
    mask = torch.ones(b, n, device=x.device)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def conv_stem(cfg: ModelConfig) -> nn.Sequential:
    """Stride-2 3x3 convs with BatchNorm + ReLU down to the patch grid, then a linear conv to
    the token width (Xiao et al.'s early-convolution stem; patch must be a power of two).
    BatchNorm is what makes it train fast from scratch here: without it the triplet loss sat
    at chance for the first thousand steps. At export it folds into the convolutions."""
    layers: list[nn.Module] = []
    ch, n = 3, int(round(np.log2(cfg.patch)))
    widths = [max(16, cfg.dim // 2 ** (n - i)) for i in range(1, n)] + [cfg.dim]
    for i, w in enumerate(widths):
        if i < len(widths) - 1:
            layers += [nn.Conv2d(ch, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        else:
            layers.append(nn.Conv2d(ch, w, 3, stride=2, padding=1))
        ch = w
    return nn.Sequential(*layers)


class ViTBackbone(nn.Module):
    """Patch embedding + transformer blocks over face crops (B, 3, S, S) in [0, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = conv_stem(cfg) if cfg.stem == "conv" else nn.Conv2d(3, cfg.dim, cfg.patch, stride=cfg.patch)
        self.register_buffer("pos", sincos_pos_embed(cfg.dim, cfg.img_size // cfg.patch)[None], persistent=False)
        self.register_buffer("mean", torch.tensor(_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).reshape(1, 3, 1, 1), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) token features of the full (unmasked) image."""
        return self.encode(self.tokens(images))

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """(B, dim) mean-pooled token features: the 'MAE features' baseline and head input."""
        return self.forward(images).mean(dim=1)


class ExpressionEncoder(nn.Module):
    """Backbone + linear head on mean-pooled tokens -> 16-d unit-length expression embedding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ViTBackbone(cfg)
        # BatchNorm before the linear head: mean-pooled token features of different faces share
        # a large common component, so a bare linear head starts with every embedding inside a
        # narrow cone and the triplet loss sits at its collapsed value (2 x margin) with almost
        # no gradient. Centring across the batch spreads them. At inference it is a fixed affine
        # map, so head(bn(x)) is still one linear layer on the pooled tokens.
        self.head_norm = nn.BatchNorm1d(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.embed_dim)
        self.au_head = nn.Linear(cfg.dim, cfg.au_units) if cfg.au_units else None

    def forward(self, images: torch.Tensor, with_units: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The unit-length embedding; with `with_units`, also the action-unit read-out (in the
        standardised units training gives it)."""
        pooled = self.head_norm(self.backbone.pooled(images))
        embedding = F.normalize(self.head(pooled), dim=-1)
        if not with_units:
            return embedding
        if self.au_head is None:
            raise ValueError("this encoder has no action-unit head (ModelConfig.au_units is 0)")
        return embedding, self.au_head(pooled)


class MAEDecoder(nn.Module):
    """Light decoder that predicts the pixels of hidden patches from the visible tokens."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.decoder_dim
        self.embed = nn.Linear(cfg.dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("pos", sincos_pos_embed(d, cfg.img_size // cfg.patch)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(d, cfg.decoder_heads, 4.0) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(d)
        self.pred = nn.Linear(d, cfg.patch * cfg.patch * 3)

    def forward(self, kept: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.embed(kept)
        b, n = ids_restore.shape
        filler = self.mask_token.expand(b, n - x.shape[1], -1)
        x = torch.cat([x, filler], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2])) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, S, S) -> (B, N, patch*patch*3) in the same token order as the conv patch embed."""
    b, c, s, _ = images.shape
    g = s // patch
    x = images.reshape(b, c, g, patch, g, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, g * g, patch * patch * c)


class MaskedAutoencoder(nn.Module):
    """MAE pretraining wrapper; `encoder` is the ExpressionEncoder whose backbone is trained."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ExpressionEncoder(cfg)
        self.decoder = MAEDecoder(cfg)

    def forward(self, images: torch.Tensor, mask_ratio: float = 0.75) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (loss, predicted patches). Loss is MSE on per-patch normalised pixels over the
        hidden patches only (MAE's norm_pix_loss: sharper features than raw-pixel targets)."""
        bb = self.encoder.backbone
        kept, mask, ids_restore = random_masking(bb.tokens(images), mask_ratio)
        pred = self.decoder(bb.encode(kept), ids_restore)
        target = patchify(images, self.cfg.patch)
        mu, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mu) / (var + 1e-6).sqrt()
        per_patch = ((pred - target) ** 2).mean(-1)
        # The head is unused in pretraining; a zero-weight term keeps DDP from complaining about
        # parameters that receive no gradient.
        heads = [m for m in (self.encoder.head, self.encoder.head_norm, self.encoder.au_head) if m is not None]
        unused = sum(p.sum() for m in heads for p in m.parameters()) * 0.0
        return (per_patch * mask).sum() / mask.sum() + unused, pred


class EmotionClassifier(nn.Module):
    """Baseline only: the same backbone trained to classify discrete emotion categories."""

    def __init__(self, cfg: ModelConfig, n_classes: int) -> None:
        super().__init__()
        self.backbone = ViTBackbone(cfg)
        # the encoder's head_norm before its linear layer. The classifier sat at the majority
        # class without it; whether this is the cure is not yet shown (a retrained baseline is)
        self.head_norm = nn.BatchNorm1d(cfg.dim)
        self.fc = nn.Linear(cfg.dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_norm(self.backbone.pooled(images)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
