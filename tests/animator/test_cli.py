"""`freeavatar train animator` against a real server, and `freeavatar eval animator --json`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.evaluate import SHARED_FILE, per_avatar_file, save_decoder
from freeavatar_server.training.animator.model import (
    AnimatorConfig,
    AvatarRig,
    PerAvatarDecoder,
    SharedAnimator,
    save_animator,
)
from tests.conftest import ServerThread
from tests.test_cli import invoke

GEOMETRY_FEATURES = 25  # encoder.evaluate.geometry_features: 5 regions x 5 measurements


def tiny_models(directory: Path, encoder: Path) -> Path:
    directory.mkdir(parents=True)
    torch.manual_seed(0)
    shared = SharedAnimator(AnimatorConfig(width=32, token_dim=16, heads=2))
    for name, avatar in BUILTIN_AVATARS.items():
        rig = AvatarRig.from_spec(avatar.spec)
        shared.add_avatar(name, rig)
        save_decoder(PerAvatarDecoder(AnimatorConfig(width=32), rig), directory / per_avatar_file("per_avatar", name))
        save_decoder(PerAvatarDecoder(AnimatorConfig(width=32), rig, in_dim=GEOMETRY_FEATURES),
                     directory / per_avatar_file("geometry", name))
    save_animator(shared, directory / SHARED_FILE)
    shutil.copy(encoder, directory / "encoder.pt")  # the encoder it "was trained with"
    return directory


def test_eval_animator_prints_the_report(tmp_path: Path, tiny_encoder_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FREEAVATAR_ANIMATOR_ENCODER", raising=False)
    models = tiny_models(tmp_path / "models", tiny_encoder_path)
    code, out = invoke("eval", "animator", "--json", "--models", str(models), "--actors", "12",
                       "--picture", str(tmp_path / "side.png"))
    assert code == 0, out
    report = json.loads(out)
    assert set(report["avatars"]) == set(BUILTIN_AVATARS)
    for row in report["avatars"].values():
        for key in ("shared_error", "per_avatar_error", "geometry_error", "neutral_error", "shared_ref_consistency"):
            assert 0 <= row[key] <= 4, key
        assert -1 <= row["shared_correlation"] <= 1
        by_control = row["shared_correlation_by_control"]
        assert by_control and all(-1 <= r <= 1 for r in by_control.values())
    params = report["parameters"]
    assert params["shared"] > 0 and params["per_avatar_total"] > 0
    assert report["encoder"] == str(models / "encoder.pt")
    assert (tmp_path / "side.png").stat().st_size > 1000
    code, out = invoke("eval", "animator", "--json", "--models", str(tmp_path))
    assert code != 0 and "no animator.pt" in out


@pytest.mark.slow
def test_train_animator_command(server_thread: ServerThread, tiny_encoder_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREEAVATAR_ANIMATOR_ENCODER", str(tiny_encoder_path))  # the job worker inherits these
    monkeypatch.setenv("FREEAVATAR_ANIMATOR_BASE", "none")
    server = ("--server", server_thread.address)
    code, out = invoke("train", "animator", "robot", *server)
    assert code == 1 and "no avatar with id or name 'robot'" in out
    code, out = invoke("avatars", "render-samples", "robot", "--count", "60", "--size", "32", *server)
    assert code == 0, out
    code, out = invoke("train", "animator", "robot", "--steps", "4", "--batch-size", "4", *server)
    assert code == 1 and "has no active renderer" in out
    code, out = invoke("train", "renderer", "robot", "--steps", "20", "--image-size", "16", *server)
    assert code == 0, out
    code, out = invoke("train", "animator", "robot", "--steps", "4", "--batch-size", "4", "--keyframe-limit", "0", *server)
    assert code == 0, out
    assert "succeeded: model version 1" in out
