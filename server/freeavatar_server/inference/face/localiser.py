"""Run the shipped face localiser (ONNX Runtime, CPU, one thread) on frames and windows."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from freeavatar_server.inference.face.detection import (
    Detection,
    LocaliserConfig,
    decode,
    preprocess,
)
from freeavatar_server.inference.onnx import open_session
from freeavatar_server.inference.shipped import FACE_LOCALISER_ONNX as DEFAULT_MODEL


def read_config(session) -> LocaliserConfig:  # session: onnxruntime.InferenceSession
    meta = session.get_modelmeta().custom_metadata_map
    return LocaliserConfig.from_json(meta["freeavatar_face_config"])


def full_input_size(width: int, height: int, target: tuple[int, int]) -> tuple[int, int]:
    """The network input (w, h) for a frame: the pixel budget of `target` at the frame's own
    aspect ratio, rounded to the network stride (8). A 640x480 frame becomes 160x120, a 512x512
    photo 136x136, a 1280x720 frame 184x104 (a wide frame keeps its faces as large as a 4:3
    one does, at the same cost)."""
    scale = math.sqrt(target[0] * target[1] / (width * height))
    w = max(8, int(round(width * scale / 8)) * 8)
    h = max(8, int(round(height * scale / 8)) * 8)
    return w, h


class FaceLocaliser:
    """The learned single-face localiser. Stateless per call: one instance can serve many
    trackers (ONNX Runtime sessions are safe to share across threads)."""

    def __init__(self, model_path: Path | str | None = None, threads: int = 1) -> None:
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        self.session = open_session(path, threads, made_by="`freeavatar train face all --ship`")
        self.config = read_config(self.session)

    def _run(self, image: np.ndarray) -> Detection:
        out = self.session.run(None, {"image": preprocess(image[None])})[0]
        return decode(out, self.config.stride)[0]

    def detect(self, frame: np.ndarray) -> Detection:
        """Strongest face in a whole frame (shrunk to the network's input), in frame pixels."""
        h, w = frame.shape[:2]
        iw, ih = full_input_size(w, h, self.config.full_input)
        small = cv2.resize(frame, (iw, ih), interpolation=cv2.INTER_AREA)
        det = self._run(small)
        scale = np.array([w / iw, h / ih, w / iw, h / ih], dtype=np.float32)
        return Detection(det.box * scale, det.confidence)
