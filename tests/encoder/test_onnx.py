from __future__ import annotations

import numpy as np
import torch

from freeavatar_server.encoder.export import OnnxEncoder, export_onnx
from freeavatar_server.encoder.model import ExpressionEncoder


def test_onnx_matches_pytorch(tiny_model, tmp_path):
    torch.manual_seed(0)
    enc = ExpressionEncoder(tiny_model).eval()
    path = export_onnx(enc, tmp_path / "enc.onnx")
    sess = OnnxEncoder(path)
    assert sess.provider == "CPUExecutionProvider" or sess.provider == "CUDAExecutionProvider"
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = enc(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).numpy()
    got = sess.embed_batch(images)  # dynamic batch of 7
    assert got.shape == (7, 16)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    np.testing.assert_allclose(sess.embed(images[3]), ref[3], atol=1e-4)
