from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from freeavatar_server.synth.actors import ACTION_UNITS, AU_INDEX, render_frames
from freeavatar_server.synth.cli import synth_app
from freeavatar_server.synth.video import (
    frame_noise_seeds,
    make_trajectory,
    read_ground_truth,
    write_video,
)


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _pool(image: np.ndarray, k: int = 4) -> np.ndarray:
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    x = image[:h, :w].astype(np.float32)
    return x.reshape(h // k, k, w // k, k, 3).mean(axis=(1, 3))


def test_trajectory_is_smooth_and_deterministic() -> None:
    a = make_trajectory(6.0, 30.0, seed=3, width=320, height=240)
    assert a.n_frames == 180
    assert np.array_equal(
        a.expressions, make_trajectory(6.0, 30.0, seed=3, width=320, height=240).expressions
    )
    assert a.expressions.min() >= 0 and a.expressions.max() <= 1
    # no jumps in pose or placement between frames; expressions change within a few frames
    assert np.abs(np.diff(a.poses, axis=0)).max() < 3.0
    assert np.abs(np.diff(a.face_boxes, axis=0)).max() < 8.0
    assert np.abs(np.diff(a.expressions, axis=0)).max() <= 0.6
    assert np.abs(a.poses).max() <= 30
    blink = a.expressions[:, AU_INDEX["blink_L"]]
    assert (blink > 0.9).any(), "blinks happen"
    assert a.expressions[:, AU_INDEX["jaw_drop"]].std() > 0.01 or len(set(a.acts)) > 2


def test_video_and_json_round_trip(tmp_path: Path) -> None:
    traj = make_trajectory(0.5, 10.0, seed=4, width=160, height=120)  # seed 4: noisy sensor
    json_path = write_video(traj, tmp_path / "clip.mp4")
    assert json_path == tmp_path / "clip.json"
    truth = read_ground_truth(json_path)
    frames = _decode(tmp_path / "clip.mp4")
    assert len(frames) == traj.n_frames == len(truth.expressions)
    assert frames[0].shape == (120, 160, 3)
    assert truth.action_units == ACTION_UNITS
    assert np.allclose(truth.expressions, traj.expressions, atol=1e-4)
    assert np.allclose(truth.poses, traj.poses, atol=1e-3)
    assert np.allclose(truth.times, np.arange(traj.n_frames) / 10.0)
    # re-rendering from the JSON alone reproduces what is in the video (up to compression)
    again = render_frames(
        truth.expressions,
        np.full(len(truth.expressions), truth.identity_id),
        width=160,
        height=120,
        face_boxes=truth.face_boxes,
        poses=truth.poses,
        sample_seeds=np.full(len(truth.expressions), 4),
        noise_seeds=frame_noise_seeds(4, 0, len(truth.expressions)),
    )
    assert np.allclose(again.boxes, truth.face_boxes, atol=0.01)
    other = render_frames(
        truth.expressions,
        np.full(len(truth.expressions), truth.identity_id + 1),
        width=160,
        height=120,
        face_boxes=truth.face_boxes,
        poses=truth.poses,
        sample_seeds=np.full(len(truth.expressions), 4),
    )
    for decoded, rendered, wrong in zip(frames, again.images, other.images, strict=True):
        # compare 4x4 means: the codec smooths sensor noise away, the picture must match
        err = np.abs(_pool(decoded) - _pool(rendered)).mean()
        assert err < 2.5
        assert np.abs(_pool(decoded) - _pool(wrong)).mean() > 2 * err
    # and the face is where the JSON says it is: the box region moves with the box
    assert not np.allclose(truth.face_boxes[0], truth.face_boxes[-1])


def test_cli_video_writes_clip_and_json(tmp_path: Path) -> None:
    out = tmp_path / "c.mp4"
    result = CliRunner().invoke(
        synth_app,
        [
            "video",
            "--out",
            str(out),
            "--seconds",
            "0.4",
            "--fps",
            "10",
            "--width",
            "128",
            "--height",
            "96",
            "--seed",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["n_frames"] == 4 == len(data["frames"]) == len(_decode(out))
    frame = data["frames"][3]
    assert set(frame) >= {"index", "time", "action_units", "head_pose", "face_box"}
    assert len(frame["action_units"]) == len(ACTION_UNITS) and set(frame["head_pose"]) == {
        "yaw",
        "pitch",
        "roll",
    }


def test_cli_rejects_odd_sizes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        synth_app, ["video", "--out", str(tmp_path / "x.mp4"), "--width", "127"]
    )
    assert result.exit_code != 0


def test_cli_sheet_writes_a_png(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "docs" / "sheet.png"
    result = CliRunner().invoke(synth_app, ["sheet", "--out", str(out), "--cell", "32"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.width > 15 * 32 and im.height > 20 * 32


def test_cli_triplets_writes_an_fec_folder(tmp_path: Path) -> None:
    from freeavatar_server.synth.triplets import read_fec_csv

    result = CliRunner().invoke(
        synth_app, ["triplets", "--out", str(tmp_path / "f"), "--n", "3", "--size", "32"]
    )
    assert result.exit_code == 0, result.output
    assert len(read_fec_csv(tmp_path / "f" / "triplets.csv")) == 3


def test_installed_freeavatar_command_has_synth() -> None:
    """The real entry point (not just the sub-app) exposes `freeavatar synth video|sheet`."""
    exe = Path(sys.executable).parent / "freeavatar"
    if not exe.exists():
        pytest.skip("the freeavatar entry point is not installed in this environment")
    result = subprocess.run(
        [str(exe), "synth", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "video" in result.stdout and "sheet" in result.stdout
