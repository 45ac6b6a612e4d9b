"""Training jobs across a cluster: `jobs.manager.JobSource` on PostgreSQL, with NATS notices.

Every server's free runners claim queued jobs from the shared table (`FOR UPDATE SKIP LOCKED`),
so each job runs on exactly one server, whichever had a runner free first. A submit wakes the
other servers' runners at once (`freeavatar.jobs.queued`); they also look every `poll_s`, which
covers a notice lost while NATS was away.

Each server beats in the `servers` table every `heartbeat_s`; one that has been silent for
`stale_after_s` died (a clean stop fails its own running jobs as it goes). Any server then fails
the dead one's running jobs, naming it, and gives back the jobs it had claimed but not started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg

from freeavatar_server.store_postgres import PostgresStore

log = logging.getLogger(__name__)

QUEUED_SUBJECT = "freeavatar.jobs.queued"
CANCEL_SUBJECT = "freeavatar.jobs.cancel"
DEAD_SERVER = "the server {server} running the job stopped (no heartbeat for {seconds:g} s)"


@dataclass(frozen=True)
class JobTimings:
    heartbeat_s: float = 1.0
    stale_after_s: float = 5.0  # several missed beats: a busy server is not taken for dead
    poll_s: float = 2.0


class ClusterJobQueue:
    """Owns the heartbeat task (started by `recover`, ended by `stop`)."""

    def __init__(
        self,
        store: PostgresStore,
        nc: Client,
        server_id: str,
        stop_here: Callable[[str], None],
        timings: JobTimings | None = None,
    ) -> None:
        self._store = store
        self._nc = nc
        self.server_id = server_id
        self._stop_here = stop_here  # the job manager's: stop a job if it runs here
        self._timings = timings or JobTimings()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    async def recover(self) -> None:
        await asyncio.to_thread(self._store.heartbeat, self.server_id)
        await self._reap()
        await self._nc.subscribe(QUEUED_SUBJECT, cb=self._queued_elsewhere)
        await self._nc.subscribe(CANCEL_SUBJECT, cb=self._cancel_asked)
        self._heartbeat = asyncio.create_task(self._beat(), name="cluster-heartbeat")

    async def stop(self) -> None:
        """After the job manager's own stop (its running jobs are marked failed by then)."""
        tasks = [t for t in (self._heartbeat, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._heartbeat = None
        try:
            await asyncio.to_thread(self._store.leave_cluster, self.server_id)
        except Exception as error:  # the store is away: the others reap this server's row later
            log.warning("leaving the cluster: %s", error)

    def queued(self, job_id: str) -> None:
        self._wake.set()
        self._spawn(self._nc.publish(QUEUED_SUBJECT, job_id.encode()))

    async def next_job(self) -> str:
        while True:
            self._wake.clear()
            try:
                job_id = await asyncio.to_thread(self._store.claim_job, self.server_id)
            except Exception as error:  # the store is away: health says so; try again later
                log.warning("claiming a job: %s", error)
                job_id = None
            if job_id is not None:
                return job_id
            try:
                await asyncio.wait_for(self._wake.wait(), self._timings.poll_s)
            except TimeoutError:
                pass

    def cancel_elsewhere(self, job_id: str) -> None:
        self._spawn(self._nc.publish(CANCEL_SUBJECT, job_id.encode()))

    async def _queued_elsewhere(self, message: Msg) -> None:
        self._wake.set()

    async def _cancel_asked(self, message: Msg) -> None:
        self._stop_here(message.data.decode(errors="replace"))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._timings.heartbeat_s)
            try:
                await asyncio.to_thread(self._store.heartbeat, self.server_id)
                await self._reap()
            except Exception as error:  # the store is away: health says so; beat again later
                log.warning("cluster heartbeat: %s", error)

    async def _reap(self) -> None:
        stale = self._timings.stale_after_s
        reason = DEAD_SERVER.replace("{seconds:g}", f"{stale:g}")
        failed = await asyncio.to_thread(self._store.reap_jobs, stale, reason)
        for job_id in failed:
            log.warning("job %s failed: its server stopped beating", job_id)
        if failed:
            self._wake.set()

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
