"""A worker's frames through shared memory: what goes in comes out, and nothing is left over."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freeavatar._proto import stream_pb2
from freeavatar_server.live.analysis import AnalysisRequest, EncodedFrame
from freeavatar_server.live.frame_arena import ArenaPixels, ArenaReader, FrameArena


def request(pixels) -> AnalysisRequest:
    return AnalysisRequest("actor", pixels, capture_time_us=1, animators={})


def test_a_ticks_frames_cross_as_descriptors_and_come_out_whole() -> None:
    arena = FrameArena.create(1 << 20)
    try:
        jpeg = EncodedFrame(stream_pb2.IMAGE_FORMAT_JPEG, b"\xff\xd8" + bytes(range(256)) * 40)
        rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
        too_big = np.zeros((600, 600, 3), np.uint8)  # 1 MB more than fits after the others
        packed = arena.pack([request(jpeg), request(rgb), request(too_big)])
        assert [type(r.pixels) for r in packed] == [ArenaPixels, ArenaPixels, np.ndarray]
        assert (arena.packed, arena.overflowed) == (2, 1)
        reader = ArenaReader.attach(arena.name)
        assert reader.pixels(packed[0].pixels) == jpeg
        out = reader.pixels(packed[1].pixels)
        np.testing.assert_array_equal(out, rgb)
        arena.pack([request(np.zeros_like(rgb))])  # the next tick, over the same bytes
        np.testing.assert_array_equal(out, rgb)  # what the worker read is its own copy
    finally:
        arena.close()
    assert not Path(f"/dev/shm/{arena.name.lstrip('/')}").exists()
