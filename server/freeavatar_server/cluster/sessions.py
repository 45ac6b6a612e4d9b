"""Sessions shared by the servers of a cluster: `live.sessions.SessionLink` over PostgreSQL and NATS.

PostgreSQL holds each shared session and its actors (the record every server trusts); a server
keeps its own copy of the sessions it serves, adopting one the first time a caller names it, and
brings it up to date when another server says on NATS (`freeavatar.sessions.changed`) that it
changed. Rig frames travel through `fanout.NatsFanout`.

Writes leave in the order they were made, through one task: an actor that joins and then leaves
is never left behind by a reordering. `saved` waits for its write, so a caller told "joined" can
go to any other server at once and be found there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from freeavatar._proto import rig_pb2, stream_pb2
from freeavatar_server.cluster.fanout import NatsFanout
from freeavatar_server.live.errors import NotFound, NotReady
from freeavatar_server.live.sessions import Actor, Offered, Session
from freeavatar_server.live.streams import LiveStreams
from freeavatar_server.live.subscriptions import session_closed
from freeavatar_server.store_postgres import PostgresStore, SessionRecord

log = logging.getLogger(__name__)

CHANGED_SUBJECT = "freeavatar.sessions.changed"
REFRESH_AT_MOST_S = 0.5  # how often frames of an unknown actor may make a session re-read


class ClusterSessions:
    """The SessionLink of a cluster's server; owns its writer task and its refreshes (`start`,
    `stop`). `attach` the server's LiveStreams before serving."""

    def __init__(self, store: PostgresStore, nc: Client, slow_consumer_drops: Callable[[], int] = lambda: 0) -> None:
        self._store = store
        self._nc = nc
        self._slow_consumer_drops = slow_consumer_drops  # NATS's client's count (the bus keeps it)
        self.fanout = NatsFanout(nc, self._deliver)
        self._live: LiveStreams | None = None
        self._writes: asyncio.Queue[tuple[Callable[[], Awaitable[None]], asyncio.Future[None]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._refreshing: dict[str, asyncio.Task[None]] = {}  # by session id, one at a time
        self._locks: dict[str, asyncio.Lock] = {}  # a session's fetches and refreshes, in turn
        self.stale_frames = 0  # frames of an actor this server has not heard of yet (dropped)
        self._asked_at: dict[str, float] = {}  # when unknown frames last made a session refresh

    def attach(self, live: LiveStreams) -> None:
        self._live = live

    async def start(self) -> None:
        self.fanout.start()
        self._writer = asyncio.create_task(self._write_in_order(), name="cluster-session-writer")
        await self._nc.subscribe(CHANGED_SUBJECT, cb=self._changed)

    async def stop(self) -> None:
        tasks = [t for t in (self._writer, *self._refreshing.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._writer = None
        self._refreshing.clear()
        await self.fanout.stop()

    # SessionLink: what this server tells the others

    def frames(self, session: Session, frames: Offered) -> None:
        self.fanout.publish(session.id, [frame for _, frame in frames])

    def listening(self, session: Session, listening: bool) -> None:
        self.fanout.listen(session.id, listening)

    async def saved(self, session: Session, actor: Actor | None = None) -> None:
        async def write() -> None:
            await asyncio.to_thread(self._store.save_session, session.id, session.name, session.token, session.created_us)
            if actor is not None:
                message = actor.to_proto()
                message.streaming = False  # where it streams is this server's business
                await asyncio.to_thread(self._store.save_actor, session.id, actor.id, message.SerializeToString())

        await self._write(write, session.id)

    def left(self, session: Session, actor_id: str) -> None:
        self._enqueue(lambda: asyncio.to_thread(self._store.delete_actor, session.id, actor_id), session.id)

    def closed(self, session: Session) -> None:
        self._enqueue(lambda: asyncio.to_thread(self._store.delete_session, session.id), session.id)
        self._asked_at.pop(session.id, None)
        lock = self._locks.get(session.id)
        if lock is not None and not lock.locked():
            del self._locks[session.id]

    def stage(self) -> stream_pb2.StageStats:
        stats = self.fanout.stats
        return stream_pb2.StageStats(
            name="cluster",
            processed=stats.received,
            dropped=stats.outbox_drops + self._slow_consumer_drops() + self.stale_frames,
        )

    async def fetch(self, session_id: str) -> None:
        async with self._lock(session_id):
            record = await asyncio.to_thread(self._store.session, session_id)
            if record is not None:
                await self._apply(record)

    # Writes, in order, each followed by a notice to the other servers

    async def _write(self, write: Callable[[], Awaitable[None]], session_id: str) -> None:
        await self._enqueue(write, session_id, waited=True)

    def _enqueue(self, write: Callable[[], Awaitable[None]], session_id: str, waited: bool = False) -> asyncio.Future[None]:
        async def write_and_tell() -> None:
            await write()
            await self._nc.publish(CHANGED_SUBJECT, session_id.encode())

        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not waited:  # nobody awaits it: its failure is logged by the writer, and that is all
            done.add_done_callback(lambda future: future.cancelled() or future.exception())
        self._writes.put_nowait((write_and_tell, done))
        return done

    async def _write_in_order(self) -> None:
        while True:
            write, done = await self._writes.get()
            try:
                await write()
            except asyncio.CancelledError:
                done.cancel()
                raise
            except Exception as error:  # the store's or NATS's error reaches whoever waits
                if not done.cancelled():
                    done.set_exception(error)
                log.warning("sharing a session change: %s", error)
                continue
            if not done.done():
                done.set_result(None)

    # What the other servers tell this one

    async def _changed(self, message: Msg) -> None:
        session_id = message.data.decode(errors="replace")
        if self._live is not None and self._live.sessions.local(session_id) is not None:
            self._refresh_soon(session_id)

    def _refresh_soon(self, session_id: str) -> None:
        running = self._refreshing.get(session_id)
        if running is not None and not running.done():
            return  # it reads the record after the change that asked for this one
        task = asyncio.create_task(self._refresh(session_id), name=f"session-refresh-{session_id[:8]}")
        self._refreshing[session_id] = task
        task.add_done_callback(lambda _: self._refreshing.pop(session_id, None) if self._refreshing.get(session_id) is task else None)

    async def _refresh(self, session_id: str) -> None:
        live = self._live
        assert live is not None
        async with self._lock(session_id):
            try:
                record = await asyncio.to_thread(self._store.session, session_id)
            except Exception as error:  # the store is away: the next change or fetch catches up
                log.warning("session %s: cannot read its record: %s", session_id, error)
                return
            if record is not None:
                await self._apply(record)
            elif live.sessions.local(session_id) is not None:  # closed on another server
                live.sessions.forget(session_id, session_closed("the session was closed on another server"))
                self._locks.pop(session_id, None)
                self._asked_at.pop(session_id, None)

    async def _apply(self, record: SessionRecord) -> None:
        """Make this server's copy of the session match its record: adopt it, add and rebind
        actors, and drop those that left (their streams here end)."""
        live = self._live
        assert live is not None
        session = live.sessions.adopt(record.id, record.name, record.token, record.created_us)
        wanted = {m.id: m for m in (stream_pb2.Actor.FromString(blob) for blob in record.actors)}
        for actor_id in [a for a in session.actors if a not in wanted]:
            del session.actors[actor_id]
            live.actor_gone(actor_id)
        for actor_id, message in wanted.items():
            current = session.actors.get(actor_id)
            if current is not None and [b.to_proto() for b in current.bindings.values()] == list(message.bindings):
                continue
            try:
                bindings = await live.bindings(message.bindings)
            except (NotFound, NotReady) as error:  # its avatar was deleted, or has no animator here
                log.warning("session %s: actor %s cannot be served here: %s", record.id, actor_id, error)
                continue
            if current is None:
                session.actors[actor_id] = Actor(actor_id, message.name, bindings)
            else:
                current.bindings = bindings

    def _deliver(self, session_id: str, batch: rig_pb2.RigFrameBatch) -> None:
        """Frames another server made, to this server's subscribers to the session."""
        session = self._live.sessions.local(session_id) if self._live is not None else None
        if session is None:
            return  # unsubscribed meanwhile
        offered = []
        for frame in batch.frames:
            actor = session.actors.get(frame.actor_id)
            binding = actor.bindings.get(frame.avatar_id) if actor is not None else None
            if binding is None:  # joined or rebound on another server a moment ago
                self.stale_frames += 1
                now = time.monotonic()
                if now - self._asked_at.get(session_id, 0.0) > REFRESH_AT_MOST_S:  # not at 30 fps
                    self._asked_at[session_id] = now
                    self._refresh_soon(session_id)
                continue
            offered.append((binding.controls, frame))
        if offered:
            session.deliver(offered)

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())
