"""An animate call that carries on when its server goes away: `AsyncClient.animate(resume=...)`.

A joined actor's session outlives the server its call reached when servers form a cluster (and
on one server that restarts, while the session is open). So when the call breaks because the
server went away (UNAVAILABLE: killed, restarting, unreachable; gRPC core's own INTERNAL for a
write the broken connection cut off; or a clean SERVER_SHUTDOWN) the
SDK makes it again after a backoff, through the same channel, which behind a load balancer or
with several addresses reaches a server that is up. Any other end (the session closed, a bad
frame) is the caller's to see, as without resume.

The camera keeps its own pace meanwhile: its frames go through a one-frame slot, the newest
winning, so the frames of the gap are dropped, never queued, and a new call starts with a
current frame.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from freeavatar.errors import FreeAvatarError, StreamEnded, Unavailable
from freeavatar.stream import AvatarControls, RigFrame, RigStream

_T = TypeVar("_T")


@dataclass(frozen=True)
class Resume:
    """How long and how often to try again: the wait doubles from `first_delay_s` to at most
    `max_delay_s`, and the stream gives up (raising the last error) after `within_s` seconds
    without a server taking the call."""

    first_delay_s: float = 0.05
    max_delay_s: float = 1.0
    within_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.first_delay_s <= self.max_delay_s or self.within_s <= 0:
            raise ValueError("Resume needs 0 < first_delay_s <= max_delay_s and within_s > 0")


# What gRPC's core (not a server) says when the connection breaks while it writes a frame of the
# call (grpc/grpc#36066): a server killed mid-stream shows up so about as often as UNAVAILABLE.
CORE_INTERNAL = "Internal error from Core"


def resumable(error: BaseException) -> bool:
    """Whether the call broke because its server went away (another may take it on)."""
    if isinstance(error, StreamEnded):
        return error.reason == "SERVER_SHUTDOWN"
    if isinstance(error, FreeAvatarError) and error.code == grpc.StatusCode.INTERNAL:
        return error.message == CORE_INTERNAL
    return isinstance(error, Unavailable)


_END = object()


class LatestFrame(Generic[_T]):
    """Reads the caller's frames at their own pace into a one-frame slot (the newest wins);
    each call in turn takes them from there with `frames()`. Owns its reading task: `close`."""

    def __init__(self, source: Iterable[_T] | AsyncIterable[_T]) -> None:
        self._source = source
        self._slot: Any = None  # a frame, _END, or None while there is none waiting
        self.error: BaseException | None = None  # what the caller's frames raised
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._generation = 0

    async def frames(self) -> AsyncIterator[_T]:
        """The frames for the current call; an earlier call's iterator stops taking them."""
        if self._task is None:
            self._task = asyncio.create_task(self._read(), name="freeavatar-frames")
        self._generation += 1
        mine = self._generation
        while mine == self._generation:
            if self._slot is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            if self._slot is _END:
                if self.error is not None:
                    raise self.error
                return
            frame, self._slot = self._slot, None
            yield frame

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        try:
            if isinstance(self._source, AsyncIterable):
                async for frame in self._source:
                    self._put(frame)
            else:
                for frame in self._source:
                    self._put(frame)
                    await asyncio.sleep(0)  # a plain list would otherwise be read in one go
        except Exception as error:  # the caller's camera failed: its call raises that
            self.error = error
        self._put(_END)

    def _put(self, item: object) -> None:
        if self._slot is not _END:
            self._slot = item
        self._ready.set()


class ResumingRigStream:
    """Rig frames of an animate call that is made again when its server goes away; as
    `RigStream` otherwise. `resumes` counts the calls made again."""

    def __init__(self, open_call: Callable[[AsyncIterator[Any]], RigStream], frames: LatestFrame[Any], resume: Resume) -> None:
        self._open_call = open_call
        self._frames = frames
        self._resume = resume
        self._stream = open_call(frames.frames())
        self.controls: dict[str, AvatarControls] = {}
        self.resumes = 0

    def __aiter__(self) -> ResumingRigStream:
        return self

    async def __anext__(self) -> RigFrame:
        deadline: float | None = None
        delay = self._resume.first_delay_s
        while True:
            try:
                frame = await anext(self._stream)
            except StopAsyncIteration:
                await self._frames.close()
                raise
            except Exception as error:
                if not resumable(error):
                    await self._frames.close()
                    raise
                deadline = deadline or time.monotonic() + self._resume.within_s
                if time.monotonic() + delay > deadline:
                    await self._frames.close()
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._resume.max_delay_s)
                self.controls.clear()  # the new call announces them again
                self._stream = self._open_call(self._frames.frames())
                self.resumes += 1
                continue
            self.controls.update(self._stream.controls)
            return frame

    async def aclose(self) -> None:
        await self._stream.aclose()
        await self._frames.close()
