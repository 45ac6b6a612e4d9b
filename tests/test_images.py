"""Decoding what clients send: the pixels Pillow would give, and a clear error otherwise."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from freeavatar_server.images import BadImage, decode_image
from freeavatar_server.media import encode_jpeg

NOISE_JPEG = encode_jpeg(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8))


def encoded(image: np.ndarray, kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=kind)
    return buffer.getvalue()


def test_jpeg_and_png_decode_to_the_rgb_pillow_gives() -> None:
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    jpeg = encode_jpeg(image)
    assert np.array_equal(decode_image(jpeg), np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
    assert np.array_equal(decode_image(encoded(image, "PNG")), image)
    grey = decode_image(encoded(image[..., 0], "PNG"))
    assert grey.shape == (48, 64, 3) and np.array_equal(grey[..., 1], image[..., 0])


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_is_left_alone_as_pillow_does(orientation: int) -> None:
    image = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation  # 3: rotated 180 degrees, 6: 90 degrees clockwise
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", exif=exif.tobytes())
    jpeg = buffer.getvalue()
    assert np.array_equal(decode_image(jpeg), np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"definitely not an image", "does not decode"),
        (NOISE_JPEG[: len(NOISE_JPEG) // 2], "truncated"),  # the header reads, the pixels do not
        (encoded(np.zeros((8, 8, 3), np.uint8), "GIF"), "GIF is not PNG or JPEG"),
    ],
)
def test_bad_images_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(BadImage, match=message):
        decode_image(data)
