"""End to end through the typer commands: train a tiny encoder (all three stages), resume is a
no-op once done, evaluate with --json on a small held-out set, export to ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from freeavatar_server.training.encoder.cli import encoder_app
from tests.encoder.conftest import tiny_train_config

WIDE = {"COLUMNS": "400"}  # a usage error's box does not wrap its message


def test_train_resume_eval_export(tmp_path):
    run = tmp_path / "run"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_train_config(str(run)).to_dict()))
    runner = CliRunner()
    res = runner.invoke(encoder_app, ["train", "--config", str(cfg_file), "--out", str(run)])
    assert res.exit_code == 0, res.output
    for stage in ("mae", "triplet", "classifier"):
        assert (run / f"{stage}.pt").exists()
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["dim"] == 32 and saved["triplet_steps"] == 3
    res = runner.invoke(encoder_app, ["train", "--config", str(cfg_file), "--out", str(run), "--resume", "--stages", "triplet"])
    assert res.exit_code == 0, res.output

    res = runner.invoke(encoder_app, ["eval", "--json", "--run-dir", str(run), "--n-triplets", "30", "--threads", "1"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert set(report["triplet_accuracy"]) == {"unambiguous", "all"}
    baselines = {"raw_pixels", "geometry", "mae_features", "classifier_features", "mediapipe_blendshapes", "mediapipe_mesh"}
    assert baselines <= set(report["baselines"]) and baselines <= set(report["au_probe_correlation_baselines"])
    assert 0.0 <= report["identity_invariance"] <= 1.0
    assert -1.0 <= report["au_probe_correlation"] <= 1.0
    assert "au_probe_correlation_with_read_out" not in report  # this encoder has no read-out
    assert set(report["stylised_triplet_accuracy"]) == set(report["mascot_triplet_accuracy"]) == {"unambiguous", "all"}

    res = runner.invoke(encoder_app, ["train", "--config", str(cfg_file), "--out", str(run), "--stylised", "2"])
    assert res.exit_code != 0 and "--stylised" in res.output and "between 0 and 1" in res.output
    res = runner.invoke(encoder_app, ["train", "--config", str(cfg_file), "--out", str(run), "--stylised", "0.6", "--mascots", "0.6"])
    assert res.exit_code != 0 and "--mascots" in res.output and "(over 1)" in res.output

    res = runner.invoke(encoder_app, ["export", str(run / "triplet.pt"), "--out", str(tmp_path / "e.onnx")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e.onnx").stat().st_size > 0

    # shipping installs what the live path and animator jobs load, not the baselines
    from freeavatar_server.training.encoder.export import ship

    shipped = ship(run, tmp_path / "models")
    assert sorted(p.name for p in shipped) == ["expression_encoder.int8.onnx", "expression_encoder.onnx", "expression_encoder.pt"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(p.name for p in shipped)


def test_a_shipped_checkpoint_resumes_as_a_warm_restart(tmp_path):
    """Shipped checkpoints carry no optimizer state; --resume from one continues its weights
    and step count with a fresh optimizer."""
    import torch

    from freeavatar_server.training.encoder.export import strip_checkpoint

    run = tmp_path / "run"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_train_config(str(run)).to_dict()))
    runner = CliRunner()
    res = runner.invoke(encoder_app, ["train", "--config", str(cfg_file), "--out", str(run), "--stages", "mae,triplet"])
    assert res.exit_code == 0, res.output
    for stage in ("mae", "triplet"):
        strip_checkpoint(run / f"{stage}.pt", run / f"{stage}.pt")
    shipped = torch.load(run / "triplet.pt", weights_only=False)
    assert "optimizer" not in shipped and shipped["step"] == 3

    res = runner.invoke(encoder_app, ["train", "--config", str(cfg_file), "--out", str(run), "--resume", "--stages", "triplet", "--triplet-steps", "5"])
    assert res.exit_code == 0, res.output
    resumed = torch.load(run / "triplet.pt", weights_only=False)
    assert resumed["step"] == 5 and resumed["optimizer"] is not None
    assert [r["step"] for r in resumed["history"]][:3] == [1, 2, 3]  # the shipped run's history kept
    assert any(not torch.equal(resumed["model"][k], v) for k, v in shipped["model"].items())


def test_dense_supervision_fine_tunes_a_trained_encoder(tmp_path):
    """--init starts triplet tuning from an earlier encoder's weights with a fresh action-unit
    read-out beside the triplet head (--au-weight); the read-out trains, and the exported graph
    serves it as a second output beside the embedding."""
    import onnxruntime as ort
    import torch

    from freeavatar_server.synth.actors import N_AU
    from freeavatar_server.training.encoder.export import export_onnx
    from freeavatar_server.training.encoder.train import load_encoder

    first, second = tmp_path / "first", tmp_path / "second"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_train_config(str(first), val_triplets=24).to_dict()))
    runner = CliRunner()
    res = runner.invoke(encoder_app, ["train", "--config", str(cfg_file), "--out", str(first), "--stages", "mae,triplet"])
    assert res.exit_code == 0, res.output
    args = ["train", "--config", str(cfg_file), "--out", str(second), "--stages", "triplet", "--init", str(first / "triplet.pt"), "--au-weight", "1"]
    res = runner.invoke(encoder_app, [*args, "--triplet-steps", "6"])
    assert res.exit_code == 0, res.output

    before, after = torch.load(first / "triplet.pt", weights_only=False), torch.load(second / "triplet.pt", weights_only=False)
    assert after["model_config"]["au_units"] == N_AU and after["config"]["init"] == str(first / "triplet.pt")
    assert after["step"] == 6 and [r["step"] for r in after["history"]][0] == 1  # a schedule of its own
    assert all(k in after["model"] for k in before["model"]) and after["model"]["au_head.weight"].shape == (N_AU, 32)
    losses = [r["unit_loss"] for r in after["history"]]
    assert all(np.isfinite(losses)) and "val_unit_r" in after["history"][-1]

    # the probe reads the units from the embedding and, apart, from the embedding beside the read-out
    res = runner.invoke(encoder_app, ["eval", "--json", "--run-dir", str(second), "--n-triplets", "30", "--threads", "1"])
    assert res.exit_code == 0, res.output
    report = json.loads(next(line for line in res.output.splitlines() if line.startswith("{")))  # stderr's note beside it
    assert -1.0 <= report["au_probe_correlation"] <= 1.0 and -1.0 <= report["au_probe_correlation_with_read_out"] <= 1.0
    assert report["au_probe_correlation_with_read_out"] != report["au_probe_correlation"]

    encoder = load_encoder(second / "triplet.pt")
    onnx_path = export_onnx(encoder, tmp_path / "e.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [(o.name, o.shape[1]) for o in session.get_outputs()] == [("embedding", 16), ("units", N_AU)]
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        embedding, units = encoder(image, with_units=True)
    assert units.shape == (2, N_AU)
    served_embedding, served_units = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    np.testing.assert_allclose(served_embedding, embedding.numpy(), atol=1e-5)
    np.testing.assert_allclose(served_units, units.numpy(), atol=1e-4)

    # shipped, its units' rest values go beside it, for the graphs shipped with them
    from freeavatar_server.inference.face.emotion import UnitGuard
    from freeavatar_server.training.encoder.export import ship
    from freeavatar_server.training.encoder.train import UnitScale

    models = tmp_path / "models"
    assert "expression_encoder.units.json" in [p.name for p in ship(second, models)]
    guard = UnitGuard.for_encoder(models / "expression_encoder.int8.onnx", models / "expression_encoder.units.json")
    scale = UnitScale.of_training_expressions(after["config"]["seed"])
    np.testing.assert_allclose(guard.rest, (-scale.mean / scale.std).numpy(), atol=1e-5)
    other = export_onnx(load_encoder(first / "triplet.pt"), tmp_path / "first.onnx")  # another encoder's graph
    assert UnitGuard.for_encoder(other, models / "expression_encoder.units.json") is None

    res = runner.invoke(encoder_app, [*args[:-4], "--init", str(tmp_path / "missing.pt")])
    assert res.exit_code != 0 and "--init" in res.output and "no checkpoint" in res.output

    # a fine-tune of that encoder starts from its read-out too, not a fresh one
    from freeavatar_server.training.encoder.model import ExpressionEncoder
    from freeavatar_server.training.encoder.train import _init_from_encoder

    again = ExpressionEncoder(encoder.cfg)
    _init_from_encoder(second / "triplet.pt", again)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), encoder.state_dict().values(), strict=True))

    # --resume goes on as the run was configured (its config.json), longer schedule and all
    res = runner.invoke(encoder_app, ["train", "--out", str(second), "--stages", "triplet", "--resume", "--triplet-steps", "8",
                                      "--triplet-lr", "0.0005"])
    assert res.exit_code == 0, res.output
    resumed = torch.load(second / "triplet.pt", weights_only=False)
    assert resumed["step"] == 8 and resumed["config"]["au_weight"] == 1 and "unit_loss" in resumed["history"][-1]
    assert resumed["config"]["triplet_lr"] == 0.0005


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny encoder trained once (MAE, then triplets) for the fine-tunes that start from it:
    its config file and run directory (read only)."""
    root = tmp_path_factory.mktemp("tiny_run")
    run, cfg_file = root / "first", root / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_train_config(str(run)).to_dict()))
    res = CliRunner().invoke(encoder_app, ["train", "--config", str(cfg_file), "--out", str(run), "--stages", "mae,triplet"])
    assert res.exit_code == 0, res.output
    return cfg_file, run


def test_a_fine_tune_reads_larger_crops_from_the_same_weights(tmp_path, tiny_run):
    """--img-size: a fine-tune at another crop size starts from every weight of the --init
    encoder (none depends on the size) and reads crops of its own size from then on."""
    import torch

    from freeavatar_server.training.encoder.train import load_encoder

    cfg_file, first = tiny_run
    second = tmp_path / "second"
    runner = CliRunner()
    args = ["train", "--config", str(cfg_file), "--out", str(second), "--stages", "triplet", "--init", str(first / "triplet.pt")]
    res = runner.invoke(encoder_app, [*args, "--img-size", "36"])
    assert res.exit_code != 0 and "--img-size" in res.output and "multiple of 8" in res.output
    res = runner.invoke(encoder_app, [*args, "--img-size", "48", "--triplet-steps", "2", "--triplet-lr", "1e-9"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(encoder_app, ["train", "--out", str(second), "--stages", "triplet", "--resume", "--img-size", "32"])
    assert res.exit_code != 0 and "--img-size" in res.output and "keeps its crop size (48)" in res.output

    small, large = load_encoder(first / "triplet.pt"), load_encoder(second / "triplet.pt")
    assert (small.cfg.img_size, large.cfg.img_size) == (32, 48)
    # a learning rate of 1e-9 leaves the weights where --init put them (BatchNorm's running
    # statistics move with the batches it saw, so only the trained weights are compared)
    trained = dict(small.named_parameters())
    assert all(torch.allclose(trained[name], value, atol=1e-6) for name, value in large.named_parameters())
    with torch.no_grad():
        assert large(torch.rand(2, 3, 48, 48)).shape == (2, 16)


def test_a_deeper_fine_tune_starts_from_the_shallower_encoders_function(tmp_path, tiny_run):
    """--depth: the blocks a deeper model adds to its --init encoder start as the identity, so
    before any step it reads faces exactly as that encoder did."""
    import dataclasses

    import torch

    from freeavatar_server.training.encoder.model import ExpressionEncoder
    from freeavatar_server.training.encoder.train import _init_from_encoder, load_encoder

    cfg_file, first = tiny_run
    args = ["train", "--config", str(cfg_file), "--out", str(tmp_path / "second"), "--stages", "triplet", "--init", str(first / "triplet.pt")]
    res = CliRunner().invoke(encoder_app, [*args, "--depth", "0"])
    assert res.exit_code != 0 and "--depth" in res.output and "at least 1" in res.output
    shallow = load_encoder(first / "triplet.pt").eval()
    res = CliRunner().invoke(encoder_app, [*args, "--depth", str(shallow.cfg.depth + 1), "--triplet-steps", "2"])
    assert res.exit_code == 0, res.output
    assert load_encoder(tmp_path / "second" / "triplet.pt").cfg.depth == shallow.cfg.depth + 1

    deep = ExpressionEncoder(dataclasses.replace(shallow.cfg, depth=shallow.cfg.depth + 2))
    _init_from_encoder(first / "triplet.pt", deep)
    deep.eval()
    faces = torch.rand(3, 3, shallow.cfg.img_size, shallow.cfg.img_size)
    with torch.no_grad():
        torch.testing.assert_close(deep(faces), shallow(faces))
        # the added blocks are not dead: their residual branches' inputs keep their random start,
        # so the zeroed outputs get gradients from the first step
        assert deep.backbone.blocks[-1].attn.qkv.weight.abs().sum() > 0

    wider = ExpressionEncoder(dataclasses.replace(shallow.cfg, dim=shallow.cfg.dim * 2))
    with pytest.raises(ValueError, match="another architecture"):
        _init_from_encoder(first / "triplet.pt", wider)


def test_a_bf16_fine_tune_computes_in_bfloat16_and_keeps_float32_weights(tmp_path, tiny_run):
    """--bf16: the forward pass runs under bfloat16 autocast, the weights, optimiser and losses
    stay float32, and the first step's losses match a float32 run's on the same batch to
    bfloat16's precision."""
    import torch

    cfg_file, first = tiny_run
    histories = {}
    for flag in ("--no-bf16", "--bf16"):
        out = tmp_path / flag.strip("-")
        args = ["train", "--config", str(cfg_file), "--out", str(out), "--stages", "triplet", "--init", str(first / "triplet.pt")]
        res = CliRunner().invoke(encoder_app, [*args, "--au-weight", "1", "--triplet-steps", "2", flag])
        assert res.exit_code == 0, res.output
        ck = torch.load(out / "triplet.pt", weights_only=False)
        assert ck["config"]["bf16"] is (flag == "--bf16")
        assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())
        histories[flag] = ck["history"][0]
    exact, fast = histories["--no-bf16"], histories["--bf16"]
    assert fast["loss"] != exact["loss"]  # it did compute in bfloat16...
    assert fast["loss"] == pytest.approx(exact["loss"], rel=0.05)  # ...to its precision
    assert fast["unit_loss"] == pytest.approx(exact["unit_loss"], rel=0.05)


@pytest.mark.parametrize("data", ["triplets alone", "fec csv"])
def test_every_triplet_path_trains_under_bf16(tmp_path, tiny_run, data):
    """--bf16 without the read-out, and on FEC-format triplets: the triplet losses and the
    training accuracy are computed from float32 embeddings there too."""
    from freeavatar_server.synth import triplets as T

    cfg_file, first = tiny_run
    args = ["train", "--config", str(cfg_file), "--out", str(tmp_path / "run"), "--stages", "triplet",
            "--init", str(first / "triplet.pt"), "--triplet-steps", "2", "--bf16"]  # fmt: skip
    if data == "fec csv":
        trips = T.make_triplets(12, seed=3, identity_ids=range(20), n_annotators=3)
        args += ["--fec-csv", str(T.export_triplets(trips, tmp_path / "fec", size=48))]
    res = CliRunner().invoke(encoder_app, args)
    assert res.exit_code == 0, res.output


def test_reuse_is_kept_in_the_run_and_cannot_change_on_resume(tmp_path, tiny_run):
    """--reuse lands in the checkpoint's config; a resumed run keeps it (it sets which batch
    each step trains on), and a config asking for less than one step a batch is refused."""
    import torch

    cfg_file, first = tiny_run
    out = tmp_path / "reused"
    args = ["train", "--config", str(cfg_file), "--out", str(out), "--stages", "triplet", "--init", str(first / "triplet.pt")]
    res = CliRunner().invoke(encoder_app, [*args, "--triplet-steps", "2", "--reuse", "2"])
    assert res.exit_code == 0, res.output
    assert torch.load(out / "triplet.pt", weights_only=False)["config"]["reuse"] == 2
    for resumed in (["--reuse", "3"], ["--config", str(cfg_file), "--init", str(first / "triplet.pt")]):  # a flag, or a config with reuse 1
        res = CliRunner().invoke(encoder_app, ["train", "--out", str(out), "--stages", "triplet", "--resume", "--triplet-steps", "4", *resumed], env=WIDE)
        assert res.exit_code == 2 and "was trained with reuse 2; a resumed run keeps it" in res.output
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**json.loads(cfg_file.read_text()), "reuse": 0}))
    res = CliRunner().invoke(encoder_app, ["train", "--config", str(broken), "--out", str(tmp_path / "never"), "--stages", "triplet"], env=WIDE)
    assert res.exit_code == 2 and "reuse must be at least 1" in res.output


def test_a_fault_inside_training_is_reported_as_one_not_as_a_bad_flag(tmp_path, monkeypatch):
    """A run its configuration cannot go on with is a usage error (exit 2, the reason); any
    other error inside training, ValueError included, keeps its traceback."""
    from freeavatar_server.training.encoder import train as train_module

    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_train_config(str(tmp_path / "run")).to_dict()))
    args = ["train", "--config", str(cfg_file), "--out", str(tmp_path / "run")]
    res = CliRunner().invoke(encoder_app, [*args, "--stages", "mae,tripet"], env=WIDE)
    assert res.exit_code == 2 and "unknown stage 'tripet'" in res.output
    assert not (tmp_path / "run" / "mae.pt").exists()  # refused before the first stage trained
    res = CliRunner().invoke(encoder_app, [*args, "--stages", "triplet"], env=WIDE)  # no mae.pt, no --init
    assert res.exit_code == 2 and "run the mae stage first" in res.output

    def broken_stage(*_args, **_kwargs):
        raise ValueError("operands could not be broadcast together")  # a bug, not a flag

    monkeypatch.setattr(train_module, "mae_stage", broken_stage)
    res = CliRunner().invoke(encoder_app, [*args, "--stages", "mae"])
    assert res.exit_code == 1 and isinstance(res.exception, ValueError) and "Invalid value" not in res.output
