"""One server's place in a cluster: its NATS connection, its shared sessions, its job claims,
the notices about avatars and models, and its health as the cluster sees it.

Owned by the server (`app/server.py`): `start` before serving, `stop` after the job manager and
the live streams have stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.msg import Msg

from freeavatar_server.cluster.bus import ClusterBus, ClusterUnreachable, NatsSettings
from freeavatar_server.cluster.jobs import ClusterJobQueue, JobTimings
from freeavatar_server.cluster.sessions import ClusterSessions
from freeavatar_server.store import StoreError
from freeavatar_server.store_postgres import PostgresStore

log = logging.getLogger(__name__)

MODEL_SUBJECT = "freeavatar.models.changed"  # an avatar's active animator changed
AVATAR_DELETED_SUBJECT = "freeavatar.avatars.deleted"
HEALTH_CHECK_S = 1.0

AvatarHandler = Callable[[str], Awaitable[None]]  # takes an avatar id
HealthHandler = Callable[[str | None], Awaitable[None]]  # None: healthy; else what is wrong


__all__ = ["ClusterNode", "ClusterUnreachable", "join_cluster"]


async def join_cluster(
    nats_url: str,
    store_url: str,
    server_id: str,
    credentials_file: Path | None = None,
    user: str | None = None,
    password: str | None = None,
) -> ClusterNode:
    """Open the cluster's PostgreSQL store and connect to its NATS: StoreUnusable or
    ClusterUnreachable, naming the one that cannot be reached, if not."""
    store = await asyncio.to_thread(PostgresStore, store_url)
    node = ClusterNode(NatsSettings(nats_url, server_id, credentials_file, user, password), store)
    try:
        await node.connect()
    except BaseException:
        store.close()
        raise
    return node


class ClusterNode:
    def __init__(self, settings: NatsSettings, store: PostgresStore, timings: JobTimings | None = None) -> None:
        self.server_id = settings.name
        self.store = store
        self.bus = ClusterBus(settings)
        self._timings = timings or JobTimings()
        self.sessions: ClusterSessions | None = None
        self.jobs: ClusterJobQueue | None = None
        self._refresh_model: AvatarHandler | None = None
        self._delete_avatar: AvatarHandler | None = None
        self._health: HealthHandler | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        """Connect to NATS (ClusterUnreachable if it cannot) and make the session link."""
        nc = await self.bus.start()
        self.sessions = ClusterSessions(self.store, nc, lambda: self.bus.slow_consumer_drops)

    def make_job_queue(self, stop_here: Callable[[str], None]) -> ClusterJobQueue:
        assert self.bus.nc is not None, "connect first"
        self.jobs = ClusterJobQueue(self.store, self.bus.nc, self.server_id, stop_here, self._timings)
        return self.jobs

    async def start(self, refresh_model: AvatarHandler, delete_avatar: AvatarHandler, health: HealthHandler) -> None:
        """Hear the other servers; report health changes to `health` from now on."""
        assert self.bus.nc is not None and self.sessions is not None, "connect first"
        self._refresh_model, self._delete_avatar, self._health = refresh_model, delete_avatar, health
        await self.sessions.start()
        await self.bus.nc.subscribe(MODEL_SUBJECT, cb=self._model_changed_elsewhere)
        await self.bus.nc.subscribe(AVATAR_DELETED_SUBJECT, cb=self._avatar_deleted_elsewhere)
        self._monitor = asyncio.create_task(self._watch_health(), name="cluster-health")

    async def stop(self) -> None:
        tasks = [t for t in (self._monitor, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._monitor = None
        if self.jobs is not None:
            await self.jobs.stop()
        if self.sessions is not None:
            await self.sessions.stop()
        await self.bus.stop()

    # Notices: this server changed something every server's live path uses

    async def model_changed(self, avatar_id: str) -> None:
        """An avatar's active animator changed (published or activated): swap it in here and on
        every other server, without a restart."""
        assert self._refresh_model is not None
        await self._refresh_model(avatar_id)
        await self._tell(MODEL_SUBJECT, avatar_id)

    async def avatar_deleted(self, avatar_id: str) -> None:
        assert self._delete_avatar is not None
        await self._delete_avatar(avatar_id)
        await self._tell(AVATAR_DELETED_SUBJECT, avatar_id)

    async def _tell(self, subject: str, avatar_id: str) -> None:
        assert self.bus.nc is not None
        try:
            await self.bus.nc.publish(subject, avatar_id.encode())
        except Exception as error:  # NATS away: the others catch up when they next load the avatar
            log.warning("telling the cluster (%s %s): %s", subject, avatar_id, error)

    async def _model_changed_elsewhere(self, message: Msg) -> None:
        assert self._refresh_model is not None
        self._run(self._refresh_model(message.data.decode(errors="replace")))

    async def _avatar_deleted_elsewhere(self, message: Msg) -> None:
        assert self._delete_avatar is not None
        self._run(self._delete_avatar(message.data.decode(errors="replace")))

    def _run(self, coroutine: Awaitable[None]) -> None:
        async def logged() -> None:
            try:
                await coroutine
            except Exception as error:  # an avatar deleted meanwhile, the store away: logged
                log.warning("applying a change from another server: %s", error)

        task = asyncio.create_task(logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Health: NOT_SERVING while NATS or PostgreSQL is away, SERVING again once both are back

    def problem(self) -> str | None:
        if not self.bus.connected:
            return self.bus.problem or f"not connected to NATS at {self.bus.settings.url}"
        try:
            self.store.ping()
        except StoreError as error:
            return str(error)
        return None

    async def _watch_health(self) -> None:
        assert self._health is not None
        reported: str | None = None
        while True:
            problem = await asyncio.to_thread(self.problem)
            if problem != reported:
                if problem is None:
                    log.info("cluster services reachable again; health is SERVING")
                else:
                    log.error("%s; health is NOT_SERVING until it is back", problem)
                await self._health(problem)
                reported = problem
            await asyncio.sleep(HEALTH_CHECK_S)
