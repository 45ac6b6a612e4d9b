"""`freeavatar avatars suggest-keyframes`: which frames of an actor's video an artist should pose,
read by the real front end and encoder from a synthetic actor's clip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from freeavatar.cli import app
from freeavatar_server.media import VideoWriter
from freeavatar_server.synth.actors import N_AU, render_faces, sample_expressions

runner = CliRunner()
RESTING = 40  # frames of the actor at rest before the expressive ones


def actor_clip(path: Path) -> Path:
    """One person: at rest for RESTING frames, then eight strong expressions."""
    expressions = np.concatenate([np.zeros((RESTING, N_AU), np.float32),
                                  sample_expressions(8, np.random.default_rng(3)).clip(0.6, 1.0)])
    faces = render_faces(expressions, np.full(len(expressions), 7), size=192, seed=0)
    with VideoWriter(path, 15.0, 192, 192) as video:
        for face in faces.images:
            video.write(np.ascontiguousarray(face))
    return path


def test_the_frames_to_pose_are_the_expressive_ones(tmp_path: Path) -> None:
    out = tmp_path / "keyframes"
    result = runner.invoke(app, ["avatars", "suggest-keyframes", str(actor_clip(tmp_path / "actor.mp4")),
                                 "--count", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "keyframes.json").read_text())
    picked = [k["frame"] for k in manifest["keyframes"]]
    assert manifest["frames"] == RESTING + 8 and manifest["frames_with_a_face"] >= 46
    assert len(set(picked)) == 4 and sum(frame >= RESTING for frame in picked) >= 3
    assert sorted(p.name for p in out.glob("*.png")) == sorted(k["file"] for k in manifest["keyframes"])


def test_a_video_it_cannot_use_is_named(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["avatars", "suggest-keyframes", str(tmp_path / "none.mp4")])
    assert missing.exit_code == 2 and "is not a file" in missing.output
    noise = tmp_path / "noise.mp4"
    with VideoWriter(noise, 15.0, 64, 64) as video:
        for i in range(6):
            video.write(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    faceless = runner.invoke(app, ["avatars", "suggest-keyframes", str(noise), "--count", "3", "--out", str(tmp_path / "k")])
    assert faceless.exit_code == 2 and "a face in 0 of 6 frames" in faceless.output
