from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import torch

from freeavatar_server.inference.encoder import OUTPUT_NAME, UNITS_NAME, OnnxEncoder
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
    # no action-unit head, no read-out: the graph has the embedding alone, read_batch says so
    assert [o.name for o in onnx.load(str(path)).graph.output] == [OUTPUT_NAME]
    embeddings, units = sess.read_batch(images)
    assert sess.unit_dim == 0 and units is None
    np.testing.assert_array_equal(embeddings, got)


def test_an_encoder_with_a_read_out_serves_it_beside_the_embedding(tiny_model, tmp_path):
    torch.manual_seed(0)
    enc = ExpressionEncoder(replace(tiny_model, au_units=25)).eval()
    path = export_onnx(enc, tmp_path / "enc.onnx")
    assert [o.name for o in onnx.load(str(path)).graph.output] == [OUTPUT_NAME, UNITS_NAME]
    sess = OnnxEncoder(path)
    images = np.random.default_rng(3).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)  # two batches of the graph
    with torch.no_grad():
        ref_embeddings, ref_units = enc(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, with_units=True)
    embeddings, units = sess.read_batch(images)
    assert sess.unit_dim == 25 and units.shape == (70, 25)
    np.testing.assert_allclose(embeddings, ref_embeddings.numpy(), atol=1e-4)
    np.testing.assert_allclose(units, ref_units.numpy(), atol=1e-4)
    np.testing.assert_array_equal(sess.embed_batch(images), embeddings)  # old consumers: the same embedding
    # the int8 copy the live path runs keeps both outputs
    int8 = OnnxEncoder(quantize_onnx(path, tmp_path / "enc.int8.onnx"))
    int8_embeddings, int8_units = int8.read_batch(images)
    assert int8.unit_dim == 25
    assert (int8_embeddings * embeddings).sum(1).min() > 0.99
    assert np.corrcoef(int8_units.ravel(), units.ravel())[0, 1] > 0.99


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
    (fresh_embeddings, fresh_units), (embeddings, units) = fresh.read_batch(faces), shipped.read_batch(faces)
    assert (fresh_embeddings * embeddings).sum(1).min() > 0.9999
    assert shipped.unit_dim == fresh.unit_dim
    if units is not None:
        np.testing.assert_allclose(units, fresh_units, atol=1e-3)


def test_shipped_float_encoder_is_the_export_of_the_shipped_checkpoint():
    """Both outputs: re-export the shipped .pt (`freeavatar encoder export`) when it changes, or
    when the export does (the read-out became the graph's second output)."""
    from freeavatar_server.training.encoder.train import load_encoder

    enc = load_encoder(DEFAULT_ONNX.with_suffix(".pt"))
    shipped = OnnxEncoder(DEFAULT_ONNX)
    assert shipped.unit_dim == enc.cfg.au_units  # the read-out is served whenever the encoder has one
    faces = np.random.default_rng(4).integers(0, 256, (4, shipped.size, shipped.size, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = enc(torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255, with_units=bool(enc.cfg.au_units))
    embeddings, units = shipped.read_batch(faces)
    if enc.cfg.au_units:
        expected, expected_units = expected
        np.testing.assert_allclose(units, expected_units.numpy(), atol=1e-4)
    np.testing.assert_allclose(embeddings, expected.numpy(), atol=1e-4)


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
