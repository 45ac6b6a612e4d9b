"""A subscriber's rig stream: control names once per avatar, then frames, newest first to go.

Backpressure policy (DESIGN.md, "latest frame wins"): a subscriber that reads slower than
frames arrive loses its oldest frames, never stalls the publisher or other subscribers, and
every loss is counted. Control-name announcements are never dropped, since the frames after
them are meaningless without them.

A batched subscription (the client asked for batch_frames) sends each source frame's rig
frames as one RigFrameBatch message instead of one message per avatar: the same frames, a
quarter of the messages for an actor bound to four avatars, and gRPC's cost is per message.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from freeavatar._proto import rig_pb2, stream_pb2

DEFAULT_CAPACITY = 8  # frames buffered per subscriber: ~250 ms at 30 fps


@dataclass(frozen=True)
class StreamEnd:
    """Why a rig stream ended: a StreamEndReason for programs (transports send it to clients)
    and a sentence for people."""

    code: stream_pb2.StreamEndReason.ValueType
    message: str

    @property
    def clean(self) -> bool:
        """Whether the stream ended because its own input did, not because it was cut off."""
        return self.code == stream_pb2.STREAM_END_INPUT_ENDED

    def __str__(self) -> str:
        return self.message


def input_ended(message: str = "the actor's input ended") -> StreamEnd:
    return StreamEnd(stream_pb2.STREAM_END_INPUT_ENDED, message)


def server_shutdown(message: str = "the server is shutting down") -> StreamEnd:
    return StreamEnd(stream_pb2.STREAM_END_SERVER_SHUTDOWN, message)


def session_closed(message: str = "the session was closed") -> StreamEnd:
    return StreamEnd(stream_pb2.STREAM_END_SESSION_CLOSED, message)


def actor_left(message: str = "the actor left the session") -> StreamEnd:
    return StreamEnd(stream_pb2.STREAM_END_ACTOR_LEFT, message)


def actor_failed(message: str) -> StreamEnd:
    return StreamEnd(stream_pb2.STREAM_END_ACTOR_FAILED, message)


class StreamClosed(Exception):
    """The stream ended: its session closed or the subscriber was removed."""

    def __init__(self, end: StreamEnd) -> None:
        super().__init__(end.message)
        self.end = end
        self.reason = end.message


class RigSubscription:
    def __init__(
        self,
        avatar_ids: frozenset[str] = frozenset(),
        capacity: int = DEFAULT_CAPACITY,
        actor_id: str = "",
        batched: bool = False,
    ) -> None:
        self.avatar_ids = avatar_ids  # empty: every avatar
        self.actor_id = actor_id  # empty: every actor; an animate call hears only its own actor
        self.batched = batched
        self.dropped = 0  # rig frames lost, however they were packed
        self._frames: deque[rig_pb2.RigStreamMessage] = deque(maxlen=capacity)
        self._announcements: deque[rig_pb2.RigStreamMessage] = deque()
        self._announced: set[str] = set()
        self._ready = asyncio.Event()
        self._closed: StreamEnd | None = None

    def wants(self, frame: rig_pb2.RigFrame) -> bool:
        return (not self.avatar_ids or frame.avatar_id in self.avatar_ids) and (
            not self.actor_id or frame.actor_id == self.actor_id
        )

    def offer(self, frames: Sequence[tuple[rig_pb2.AvatarControls, rig_pb2.RigFrame]]) -> None:
        """Queue one source frame's rig frames (with their avatars' controls) without ever
        blocking; announce an avatar's controls the first time it appears."""
        if self._closed is not None:
            return
        wanted = []
        for controls, frame in frames:
            if self.wants(frame):
                self._announce(controls)
                wanted.append(frame)
        if not wanted:
            return
        if self.batched:
            self._queue(rig_pb2.RigStreamMessage(frames=rig_pb2.RigFrameBatch(frames=wanted)))
        else:
            for frame in wanted:
                self._queue(rig_pb2.RigStreamMessage(frame=frame))
        self._ready.set()

    def _announce(self, controls: rig_pb2.AvatarControls) -> None:
        if controls.avatar_id not in self._announced:
            self._announced.add(controls.avatar_id)
            self._announcements.append(rig_pb2.RigStreamMessage(controls=controls))

    def _queue(self, message: rig_pb2.RigStreamMessage) -> None:
        if len(self._frames) == self._frames.maxlen:  # deque(maxlen) drops the oldest on append
            oldest = self._frames[0]
            self.dropped += len(oldest.frames.frames) if oldest.HasField("frames") else 1
        self._frames.append(message)

    def forget(self, avatar_id: str) -> None:
        """The avatar left the stream: announce it again if it comes back (its spec may differ)."""
        self._announced.discard(avatar_id)

    def close(self, end: StreamEnd) -> None:
        """End the stream (the first end given is the one kept); readers drain it, then stop."""
        if self._closed is None:
            self._closed = end
            self._ready.set()

    @property
    def end(self) -> StreamEnd | None:
        """Why the stream ended, once it has."""
        return self._closed

    async def next(self) -> rig_pb2.RigStreamMessage:
        """The next message; raises StreamClosed once the stream has ended and is drained."""
        while True:
            if self._announcements:
                return self._announcements.popleft()
            if self._frames:
                return self._frames.popleft()
            if self._closed is not None:
                raise StreamClosed(self._closed)
            self._ready.clear()
            await self._ready.wait()

    def __aiter__(self) -> AsyncIterator[rig_pb2.RigStreamMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[rig_pb2.RigStreamMessage]:
        try:
            while True:
                yield await self.next()
        except StreamClosed:
            return
