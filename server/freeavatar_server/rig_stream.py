"""A subscriber's rig stream: control names once per avatar, then frames, newest first to go.

Backpressure policy (DESIGN.md, "latest frame wins"): a subscriber that reads slower than
frames arrive loses its oldest frames, never stalls the publisher or other subscribers, and
every loss is counted. Control-name announcements are never dropped, since the frames after
them are meaningless without them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from freeavatar._proto import rig_pb2

DEFAULT_CAPACITY = 8  # frames buffered per subscriber: ~250 ms at 30 fps


class StreamClosed(Exception):
    """The stream ended: its session closed or the subscriber was removed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RigSubscription:
    def __init__(
        self,
        avatar_ids: frozenset[str] = frozenset(),
        capacity: int = DEFAULT_CAPACITY,
        actor_id: str = "",
    ) -> None:
        self.avatar_ids = avatar_ids  # empty: every avatar
        self.actor_id = actor_id  # empty: every actor; an animate call hears only its own actor
        self.dropped = 0
        self._frames: deque[rig_pb2.RigStreamMessage] = deque(maxlen=capacity)
        self._announcements: deque[rig_pb2.RigStreamMessage] = deque()
        self._announced: set[str] = set()
        self._ready = asyncio.Event()
        self._closed: str | None = None

    def wants(self, frame: rig_pb2.RigFrame) -> bool:
        return (not self.avatar_ids or frame.avatar_id in self.avatar_ids) and (
            not self.actor_id or frame.actor_id == self.actor_id
        )

    def offer(self, controls: rig_pb2.AvatarControls, frame: rig_pb2.RigFrame) -> None:
        """Queue a frame without ever blocking; announce its avatar's controls the first time."""
        if self._closed is not None or not self.wants(frame):
            return
        if frame.avatar_id not in self._announced:
            self._announced.add(frame.avatar_id)
            self._announcements.append(rig_pb2.RigStreamMessage(controls=controls))
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1  # deque(maxlen) drops the oldest on append
        self._frames.append(rig_pb2.RigStreamMessage(frame=frame))
        self._ready.set()

    def forget(self, avatar_id: str) -> None:
        """The avatar left the stream: announce it again if it comes back (its spec may differ)."""
        self._announced.discard(avatar_id)

    def close(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
            self._ready.set()

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
