"""A worker's frames in shared memory: the pixels of a tick's frames cross to the worker
process as a few numbers each instead of through its pipe.

A worker runs one tick at a time, reads every frame of a tick before it answers, and the next
tick is written only after that answer (`live.workers`): so each tick's frames are laid one
after another from the start of one shared block, with no ring to manage. A frame that does
not fit (a tick of many large RGB frames) goes through the pipe as before.

    arena = FrameArena.create(32 << 20)           # the server, one per worker
    requests = arena.pack(requests)               # pixels -> ArenaPixels (offset, size)
    reader = ArenaReader.attach(arena.name)       # the worker, once
    pixels = reader.pixels(request.pixels)        # EncodedFrame or (H, W, 3) uint8, copied out
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from multiprocessing import shared_memory

import numpy as np

from freeavatar_server.live.analysis import AnalysisRequest, EncodedFrame

ARENA_BYTES = 32 << 20  # a tick of 16 actors' 640x480 RGB frames (WebRTC) is 15 MB; JPEGs ~15 kB


@dataclass(frozen=True)
class ArenaPixels:
    """Where a frame's pixels lie in its worker's arena, and how to read them."""

    offset: int
    size: int
    format: int = 0  # stream_pb2.ImageFormat of encoded bytes; 0: decoded RGB of `shape`
    width: int = 0
    height: int = 0
    shape: tuple[int, ...] = ()


class FrameArena:
    """The server's side: one shared block per worker process, which the server owns."""

    def __init__(self, memory: shared_memory.SharedMemory) -> None:
        self._memory = memory
        self.packed = 0  # frames that went through the arena, and those that did not fit
        self.overflowed = 0

    @classmethod
    def create(cls, size: int = ARENA_BYTES) -> FrameArena:
        return cls(shared_memory.SharedMemory(create=True, size=size))

    @property
    def name(self) -> str:
        return self._memory.name

    def pack(self, requests: list[AnalysisRequest]) -> list[AnalysisRequest]:
        """A tick's requests with their pixels written to the arena from its start."""
        packed, offset = [], 0
        for request in requests:
            pixels = request.pixels
            data = np.frombuffer(pixels.data, np.uint8) if isinstance(pixels, EncodedFrame) else pixels.reshape(-1)
            if offset + data.size > self._memory.size:
                self.overflowed += 1
                packed.append(request)
                continue
            np.frombuffer(self._memory.buf, np.uint8, data.size, offset)[:] = data
            if isinstance(pixels, EncodedFrame):
                where = ArenaPixels(offset, data.size, pixels.format, pixels.width, pixels.height)
            else:
                where = ArenaPixels(offset, data.size, shape=pixels.shape)
            packed.append(replace(request, pixels=where))
            offset += data.size
            self.packed += 1
        return packed

    def close(self) -> None:
        self._memory.close()
        self._memory.unlink()


class ArenaReader:
    """The worker's side: the server's block, attached by name."""

    def __init__(self, memory: shared_memory.SharedMemory) -> None:
        self._memory = memory

    @classmethod
    def attach(cls, name: str) -> ArenaReader:
        # Python 3.11 registers an attached block with the resource tracker as if this process
        # had made it (gh-82300). A worker shares its server's tracker (spawn hands it down),
        # so that is the same entry again: the block is unlinked once, by the server, or by
        # the tracker if the server is killed.
        return cls(shared_memory.SharedMemory(name=name))

    def pixels(self, where: ArenaPixels) -> EncodedFrame | np.ndarray:
        """A frame as the worker reads it, copied out: the server writes the next tick's frames
        over it as soon as this tick is answered, and a frame's mesh may run after that."""
        data = np.frombuffer(self._memory.buf, np.uint8, where.size, where.offset)
        if where.shape:
            return data.reshape(where.shape).copy()
        return EncodedFrame(where.format, data.tobytes(), where.width, where.height)
