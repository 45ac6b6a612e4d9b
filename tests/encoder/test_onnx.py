from __future__ import annotations

import numpy as np
import torch

from freeavatar_server.inference.encoder import OnnxEncoder
from freeavatar_server.inference.shipped import ENCODER_INT8_ONNX as INT8_ONNX
from freeavatar_server.inference.shipped import ENCODER_ONNX as DEFAULT_ONNX
from freeavatar_server.training.encoder.export import export_onnx, quantize_onnx
from freeavatar_server.training.encoder.model import ExpressionEncoder


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


def test_int8_copy_keeps_the_embedding(tiny_model, tmp_path):
    torch.manual_seed(0)
    enc = ExpressionEncoder(tiny_model).eval()
    exact = OnnxEncoder(export_onnx(enc, tmp_path / "enc.onnx"))
    int8 = OnnxEncoder(quantize_onnx(tmp_path / "enc.onnx", tmp_path / "enc.int8.onnx"))
    images = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    a, b = exact.embed_batch(images), int8.embed_batch(images)
    assert not np.array_equal(a, b)  # it really is another graph
    assert (a * b).sum(1).min() > 0.99  # unit vectors: cosine similarity


def test_shipped_int8_encoder_is_the_quantised_float_one(tmp_path):
    """The live pipeline runs INT8_ONNX: it must come from the shipped float graph (re-run
    `quantize_onnx(DEFAULT_ONNX, INT8_ONNX)` after shipping a new encoder). Compared by what it
    computes, not by bytes, which another ONNX Runtime's quantiser may lay out differently."""
    fresh = OnnxEncoder(quantize_onnx(DEFAULT_ONNX, tmp_path / "int8.onnx"))
    shipped = OnnxEncoder(INT8_ONNX)
    faces = np.random.default_rng(2).integers(0, 256, (8, shipped.size, shipped.size, 3), dtype=np.uint8)
    assert (fresh.embed_batch(faces) * shipped.embed_batch(faces)).sum(1).min() > 0.9999


def test_shipped_animator_was_trained_through_the_shipped_encoder():
    """The live pipeline embeds faces with the shipped encoder and feeds the shipped animator,
    which only understands the embedding space it was trained in (its snapshot `encoder.pt`).
    After shipping a new encoder, retrain and ship the animator through it."""
    from freeavatar_server.inference.shipped import ANIMATOR_DIR
    from freeavatar_server.training.animator.encoding import ENCODER_FILE
    from freeavatar_server.training.encoder.train import load_checkpoint

    shipped = load_checkpoint(DEFAULT_ONNX.with_suffix(".pt"))["model"]
    trained_with = load_checkpoint(ANIMATOR_DIR / ENCODER_FILE)["model"]
    assert shipped.keys() == trained_with.keys()
    assert all(torch.equal(shipped[k], trained_with[k]) for k in shipped)
