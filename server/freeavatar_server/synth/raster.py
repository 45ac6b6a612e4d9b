"""Small vectorised raster helpers shared by the actor and avatar renderers.

Everything works on whole (B, H, W) tensors: shapes are signed-distance-like fields turned into
anti-aliased coverage with a one-pixel linear ramp, and layers are composited with "over".
Also: deterministic hashing of integer keys to uniforms (so identity i is a pure function of i),
per-sample blur, sensor noise and real JPEG round trips for the nuisance factors.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def hash_uniform(keys: np.ndarray, salt: int, n: int) -> np.ndarray:
    """(len(keys), n) float64 uniforms in [0, 1), a pure function of (key, salt, column).

    A counter-based hash rather than a seeded generator: identity 10**12 costs the same as
    identity 3, and rendering a sub-batch gives exactly the same faces as the full batch.
    """
    k = np.asarray(keys, dtype=np.int64).reshape(-1).view(np.uint64)[:, None]
    j = np.arange(n, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        z = _splitmix(k + np.uint64(salt & 0xFFFF_FFFF_FFFF_FFFF) * _MIX2)
        z = _splitmix(z + (j + np.uint64(1)) * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


_ONE = torch.ones(())


def cov(d: torch.Tensor, soft: torch.Tensor | float) -> torch.Tensor:
    """Coverage of a shape whose signed distance (positive inside) is d, ramped over `soft`."""
    return torch.mul(d, 1.0 / soft).add_(0.5).clamp_(0.0, 1.0)


def over(
    fg: torch.Tensor, fa: torch.Tensor, color: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite a (B,3,1,1)/(B,3,H,W) colour with (B,H,W) alpha over premultiplied fg/fa.

    In place (fused lerp kernels): compositing full-resolution RGB is the renderer's hot spot.
    """
    fg.lerp_(color.expand_as(fg), alpha.unsqueeze(1))
    fa.lerp_(_ONE, alpha)
    return fg, fa


def hsv(hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    """(n,) hue, saturation, value in [0, 1] -> (n, 3) RGB: colours of any hue for cartoons."""
    k = (hue[:, None] * 6.0 + np.array([5.0, 3.0, 1.0])) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return val[:, None] * (1.0 - sat[:, None] * ramp)


def col(rgb: np.ndarray) -> torch.Tensor:
    """(B,3) colours in [0,1] -> (B,3,1,1) float32 tensor for broadcasting against images."""
    return torch.as_tensor(np.asarray(rgb, dtype=np.float32)).reshape(-1, 3, 1, 1)


def par(values: np.ndarray | float, batch: int) -> torch.Tensor:
    """Per-sample scalars -> (B,1,1) float32 tensor that broadcasts against (B,H,W) fields."""
    arr = np.broadcast_to(np.asarray(values, dtype=np.float32), (batch,))
    return torch.from_numpy(np.array(arr, dtype=np.float32)).reshape(-1, 1, 1)


def gaussian_blur(img: torch.Tensor, sigma: np.ndarray, max_sigma: float) -> torch.Tensor:
    """Blur each image of (B,3,H,W) with its own sigma (pixels) by a separable grouped conv.

    The kernel support comes from `max_sigma` (the largest sigma the caller can draw), not
    from the batch, so an image blurs the same whichever batch it is rendered in.
    """
    b = img.shape[0]
    radius = int(np.ceil(3.0 * max(max_sigma, 0.3)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = torch.as_tensor(np.maximum(sigma, 1e-3), dtype=torch.float32).reshape(b, 1)
    k = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)
    k = k.repeat_interleave(3, dim=0)  # one kernel per (sample, channel) group
    x = img.reshape(1, b * 3, *img.shape[2:])
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.reshape(b * 3, 1, 1, -1), groups=b * 3)
    x = F.conv2d(x, k.reshape(b * 3, 1, -1, 1), groups=b * 3)
    return x.reshape_as(img)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Real JPEG compression artefacts (blocking, ringing, chroma loss) via Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) float in [0,1] -> (B,H,W,3) uint8."""
    return (
        (img.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    )
