"""End to end through the typer commands: train a tiny encoder (all three stages), resume is a
no-op once done, evaluate with --json on a small held-out set, export to ONNX."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from freeavatar_server.encoder.cli import encoder_app
from tests.encoder.conftest import tiny_train_config


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
    assert {"raw_pixels", "geometry", "mae_features", "classifier_features"} <= set(report["baselines"])
    assert 0.0 <= report["identity_invariance"] <= 1.0
    assert set(report["stylised_triplet_accuracy"]) == {"unambiguous", "all"}

    res = runner.invoke(encoder_app, ["train", "--config", str(cfg_file), "--out", str(run), "--stylised", "2"])
    assert res.exit_code != 0 and "--stylised" in res.output and "between 0 and 1" in res.output

    res = runner.invoke(encoder_app, ["export", str(run / "triplet.pt"), "--out", str(tmp_path / "e.onnx")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e.onnx").stat().st_size > 0
