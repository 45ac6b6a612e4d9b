"""Decoding and resizing the images clients send (render samples, keyframes, actor frames)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096  # refuse decompression bombs before decoding them


class BadImage(ValueError):
    """Bytes that are not a PNG or JPEG image we can use."""


def decode_image(data: bytes) -> np.ndarray:
    """PNG or JPEG bytes -> (H, W, 3) uint8 RGB."""
    if not data:
        raise BadImage("image is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG"):
                raise BadImage(f"image format {image.format} is not PNG or JPEG")
            if image.width * image.height > MAX_PIXELS:
                raise BadImage(f"image of {image.width}x{image.height} pixels is too large")
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise BadImage(f"image does not decode as PNG or JPEG ({error})") from None


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, area-averaged when shrinking."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX))


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
