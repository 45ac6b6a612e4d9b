"""Rig frames between the servers of a cluster, over NATS core pub/sub.

One subject per session (`freeavatar.frames.SESSION`); a server subscribes to it while the session
has a subscriber there (gRPC, WHEP, an engine output), so frames only travel to servers that
want them. A message is one source frame's rig frames (a RigFrameBatch): NATS keeps one
publisher's messages in order, which is the order each actor's frames are made in.

Latest frame wins here too: `publish` never blocks the pipeline; frames wait in a bounded outbox
for the one task that hands them to NATS, and when NATS cannot keep up the oldest go, counted.
On the receiving side a subscription that falls behind loses messages in NATS's client (a slow
consumer, counted by the bus), and each subscriber's own queue drops as in one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from freeavatar._proto import rig_pb2

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "freeavatar.frames."
OUTBOX = 1024  # source frames waiting for NATS: ~1 s of 30 actors at 30 fps
PENDING_MESSAGES = 4096  # per session subscription, before NATS's client drops (slow consumer)

Deliver = Callable[[str, rig_pb2.RigFrameBatch], None]  # (session id, frames) from another server


@dataclass
class FanoutStats:
    published: int = 0  # messages handed to NATS
    received: int = 0  # messages from other servers
    outbox_drops: int = 0  # source frames dropped because NATS could not take them in time
    bad_messages: int = 0  # messages that did not parse (never from a FreeAvatar server)


def frames_subject(session_id: str) -> str:
    return SUBJECT_PREFIX + session_id


class NatsFanout:
    """Owns the publishing task (`start`, `stop`) and the session subscriptions."""

    def __init__(self, nc: Client, deliver: Deliver, outbox: int = OUTBOX) -> None:
        self._nc = nc
        self._deliver = deliver
        self.stats = FanoutStats()
        self._outbox: deque[tuple[str, bytes]] = deque(maxlen=outbox)
        self._interest: dict[str, bool] = {}  # session id -> wanted; applied in order by the task
        self._subscriptions: dict[str, Subscription] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="nats-fanout")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for subscription in self._subscriptions.values():
            if not self._nc.is_closed:
                await subscription.unsubscribe()
        self._subscriptions.clear()

    def publish(self, session_id: str, frames: Sequence[rig_pb2.RigFrame]) -> None:
        """One source frame's rig frames, to every other server listening to the session."""
        if len(self._outbox) == self._outbox.maxlen:
            self.stats.outbox_drops += 1  # deque(maxlen) drops the oldest on append
        self._outbox.append((frames_subject(session_id), rig_pb2.RigFrameBatch(frames=frames).SerializeToString()))
        self._wake.set()

    def listen(self, session_id: str, wanted: bool) -> None:
        """Start (or stop) hearing the session's frames from other servers."""
        self._interest[session_id] = wanted
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._apply_interest()
                while self._outbox:
                    subject, payload = self._outbox.popleft()
                    await self._nc.publish(subject, payload)
                    self.stats.published += 1
            except asyncio.CancelledError:
                raise
            except Exception as error:  # NATS away: frames are dropped (counted), the task goes on
                self.stats.outbox_drops += len(self._outbox)
                self._outbox.clear()
                log.warning("rig frames to NATS: %s", error)

    async def _apply_interest(self) -> None:
        while self._interest:
            session_id, wanted = self._interest.popitem()
            current = self._subscriptions.get(session_id)
            if wanted and current is None:
                self._subscriptions[session_id] = await self._nc.subscribe(
                    frames_subject(session_id), cb=self._received, pending_msgs_limit=PENDING_MESSAGES
                )
            elif not wanted and current is not None:
                del self._subscriptions[session_id]
                await current.unsubscribe()

    async def _received(self, message: Msg) -> None:
        try:
            batch = rig_pb2.RigFrameBatch.FromString(message.data)
        except Exception:  # protobuf's DecodeError: anything may publish on a subject
            self.stats.bad_messages += 1
            return
        self.stats.received += 1
        self._deliver(message.subject.removeprefix(SUBJECT_PREFIX), batch)
