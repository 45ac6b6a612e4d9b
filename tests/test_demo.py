"""`freeavatar demo --video`: a real person's clip through an in-process server to the built-in
avatars, written as a side-by-side video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freeavatar_server.images import decode_image
from freeavatar_server.media import VideoError, VideoWriter, read_video
from freeavatar_server.tools.demo import DemoConfig, run_demo

skimage_data = pytest.importorskip("skimage.data")


def photo_clip(path: Path, seconds: float = 1.0, fps: float = 15.0) -> Path:
    """The astronaut, drifting slowly to the right: a still face, moving as a webcam's would."""
    photo = skimage_data.astronaut()  # 512 x 512
    with VideoWriter(path, fps, 480, 480) as video:
        for i in range(int(seconds * fps)):
            video.write(np.ascontiguousarray(photo[16:496, 2 * i : 2 * i + 480]))
    return path


async def test_demo_streams_a_real_face_video(tmp_path: Path) -> None:
    clip = photo_clip(tmp_path / "me.mp4")
    result = await run_demo(DemoConfig(out_dir=tmp_path / "demo", seconds=5.0, video=clip, panel=96))
    assert result.frames_sent == 15 and result.config["fps"] == 15.0
    assert result.faces_found > 0.9
    assert all(count > 0 for count in result.frames_received.values())
    frames, fps = read_video(Path(result.video))
    assert len(frames) == 15 and frames[0].shape[0] == 96
    picture = decode_image(Path(result.video).with_suffix(".png").read_bytes())
    assert picture.shape == (96 * 6, frames[0].shape[1], 3)


def test_an_unreadable_video_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError, match="bad.mp4"):
        read_video(bad)


def test_the_picture_shows_the_moments_the_actor_makes() -> None:
    from freeavatar_server.synth.actors import AU_INDEX
    from freeavatar_server.tools.demo import STRIP_FRAMES, actor_trajectory, strip_moments

    config = DemoConfig()  # the demo's own actor: rests, talks, smiles, blinks, frowns
    trajectory = actor_trajectory(config)
    moments = strip_moments(trajectory, trajectory.n_frames, config.fps)
    assert len(moments) == STRIP_FRAMES and min(moments) >= config.fps / 2
    by_name = {what: index for index, what in moments.items()}
    assert {"at rest", "smile", "mouth open", "blink", "frown"} <= set(by_name)
    expression = trajectory.expressions
    assert expression[by_name["blink"], AU_INDEX["blink_L"]] > 0.9
    assert expression[by_name["mouth open"], AU_INDEX["jaw_drop"]] > 0.3
    assert expression[by_name["smile"], AU_INDEX["lip_corner_pull_L"]] > 0.5
    assert expression[by_name["at rest"]].sum() < 0.05
    assert min(np.diff(sorted(moments))) >= config.fps / 3  # six different moments
    # a video file's actor is not known: evenly spaced moments
    assert list(strip_moments(None, 300, 30.0)) == [15, 72, 129, 185, 242, 299]
