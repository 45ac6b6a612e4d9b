"""`freeavatar avatars suggest-keyframes`: which frames of an actor's video an artist should pose.

Each frame's face is read as the live path reads it (the front end's mesh track, the encoder's
crop), into the row the base animator reads; `suggest_keyframes` then picks the frames that
teach a linear readout most. Posed on an avatar and uploaded (`AsyncClient.upload_keyframes`),
they are what an animator job fits the avatar to. The shipped animator was fitted to 20 frames
picked this way from its training actors: docs/models.md, "Animator".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from freeavatar_server.images import encode_png
from freeavatar_server.inference.animator import AnimatorRuntime
from freeavatar_server.inference.encoder import OnnxEncoder
from freeavatar_server.inference.face.crop import crop_face
from freeavatar_server.inference.face.front import FaceFront
from freeavatar_server.inference.shipped import ANIMATOR_DIR, ENCODER_INT8_ONNX
from freeavatar_server.media import iter_video, video_rate
from freeavatar_server.training.animator.keyframes import suggest_keyframes

Progress = Callable[[int], None]  # frames read so far
MANIFEST = "keyframes.json"


@dataclass(frozen=True)
class SuggestedFrame:
    file: str  # the frame as a PNG, beside the manifest
    frame: int  # its index in the video
    time_s: float


def actor_rows(video: Path, animator: AnimatorRuntime, encoder: OnnxEncoder, progress: Progress) -> tuple[np.ndarray, np.ndarray, int]:
    """(indices of the frames with a face, the rows `animator` reads of them, the video's frame
    count). The frames stream through: only the encoder's crops are kept."""
    front = FaceFront(emotions=False).track()  # the face box alone
    found, crops = [], []
    total = 0
    for index, frame in enumerate(iter_video(video)):
        face = front.update(frame)
        if face is not None:
            found.append(index)
            crops.append(crop_face(frame, face.box, encoder.size))
        total = index + 1
        progress(total)
    if not found:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), total
    embeddings, units = encoder.read_batch(np.stack(crops))
    return np.array(found), animator.input_rows(embeddings, units=units), total


def suggest_from_video(video: Path, count: int, out_dir: Path, animator_dir: Path = ANIMATOR_DIR,
                       progress: Progress = lambda _: None) -> list[SuggestedFrame]:
    """Pick `count` frames of `video` to pose and write them to `out_dir` as PNGs, with
    keyframes.json listing them (in the order picked: the first teach most). ValueError when the
    video has too few frames with a face. The video is read twice (its faces, then the picked
    frames), never held whole."""
    found, rows, total = actor_rows(video, AnimatorRuntime.load(animator_dir), OnnxEncoder(ENCODER_INT8_ONNX), progress)
    if len(found) < count:
        raise ValueError(f"{video}: a face in {len(found)} of {total} frames, fewer than the {count} keyframes asked for")
    picks = [int(found[pick]) for pick in suggest_keyframes(rows, count)]
    rank = {frame: i for i, frame in enumerate(picks)}
    files = {frame: f"keyframe_{rank[frame]:02d}_frame_{frame:05d}.png" for frame in picks}
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(iter_video(video)):
        if index in files:
            (out_dir / files[index]).write_bytes(encode_png(frame))
    fps = video_rate(video)
    suggested = [SuggestedFrame(files[frame], frame, round(frame / fps, 3)) for frame in picks]
    (out_dir / MANIFEST).write_text(json.dumps(
        {"video": str(video), "frames_with_a_face": len(found), "frames": total,
         "keyframes": [asdict(s) for s in suggested]}, indent=2))
    return suggested
