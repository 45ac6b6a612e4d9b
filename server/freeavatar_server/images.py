"""Decoding and resizing the images clients send (render samples, keyframes, actor frames)."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096  # refuse decompression bombs before decoding them


class BadImage(ValueError):
    """Bytes that are not a PNG or JPEG image we can use."""


def decode_image(data: bytes) -> np.ndarray:
    """PNG or JPEG bytes -> (H, W, 3) uint8 RGB.

    Pillow reads the header (format and size are checked before any pixel is decoded);
    OpenCV decodes the pixels: the same libjpeg-turbo output at about half Pillow's cost on
    the live path, straight into a numpy array and without holding the GIL (Pillow's
    conversion to an array copies under it, which serialises the pipeline's threads).
    """
    if not data:
        raise BadImage("image is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, width, height = image.format, image.width, image.height
    except Image.DecompressionBombError:
        # Pillow's own guard (over twice its pixel limit): a client's oversized image, not a
        # fault of ours; its message is Pillow's, so say it in the same words as ours below
        raise BadImage(f"image is too large: at most {MAX_PIXELS} pixels") from None
    except UnidentifiedImageError:
        # not Pillow's message: it names the buffer object, address and all
        raise BadImage("image does not decode as PNG or JPEG (no known image format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"image does not decode as PNG or JPEG ({error})") from None
    if kind not in ("PNG", "JPEG"):
        raise BadImage(f"image format {kind} is not PNG or JPEG")
    if width * height > MAX_PIXELS:
        raise BadImage(f"image of {width}x{height} pixels is too large")
    # Pixels as stored, as Pillow gives them: OpenCV would otherwise apply EXIF rotation
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if rgb is None or rgb.shape[:2] != (height, width):
        raise BadImage(f"{kind} image of {width}x{height} does not decode (corrupt or truncated data)")
    return rgb


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, area-averaged when shrinking, bilinear when
    enlarging (a box filter enlarges as blocky as nearest-neighbour)."""
    if image.shape[:2] == (size, size):
        return image
    shrinking = min(image.shape[:2]) >= size
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((size, size), method))


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
