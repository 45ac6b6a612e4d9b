"""Queues training jobs and runs each in a process of its own (jobs/worker.py).

The manager owns its runner tasks (start/stop) and the job processes they spawn; the store holds
every job's record, so records outlive the server, and watchers are woken on every change.
Which job a free runner takes next is its `JobSource`'s choice: this server's own queue
(`LocalJobQueue`), or in a cluster the jobs every server queues, each claimed by one server
(cluster/jobs.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

from freeavatar._proto import job_pb2
from freeavatar_server.store import JobRecord, Store, StoreError, now_us

log = logging.getLogger(__name__)

KILL_AFTER_S = 10.0  # a job that ignores "cancel" this long is killed
SERVER_STOPPED = "the server stopped while the job was running"


class JobSource(Protocol):
    """Where a free runner's next job comes from."""

    async def recover(self) -> None:
        """At start: settle the jobs a server that died left behind."""
        ...

    def queued(self, job_id: str) -> None:
        """A job was just submitted here."""
        ...

    async def next_job(self) -> str:
        """The id of the next job to run here, once there is one (this server may run it)."""
        ...

    def cancel_elsewhere(self, job_id: str) -> None:
        """Ask whichever server runs the job to stop it (it runs on no process of this one)."""
        ...


class LocalJobQueue:
    """One server's jobs: those it queued, in order; at start, those a dead server left
    running fail and those it left queued run."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    async def recover(self) -> None:
        for job_id in await asyncio.to_thread(self._store.fail_interrupted_jobs, SERVER_STOPPED):
            self._queue.put_nowait(job_id)

    def queued(self, job_id: str) -> None:
        self._queue.put_nowait(job_id)

    async def next_job(self) -> str:
        return await self._queue.get()

    def cancel_elsewhere(self, job_id: str) -> None:
        pass  # one server: a job that runs here has a process here


class JobManager:
    def __init__(
        self,
        store: Store,
        data_dir: Path,
        max_running: int = 1,
        job_threads: int = 0,
        on_model_published: Callable[[str], Awaitable[None]] | None = None,
        source: JobSource | None = None,
        job_environment: dict[str, str] | None = None,
        watch_poll_s: float | None = None,
    ) -> None:
        self._store = store
        self._on_model_published = on_model_published  # live streams swap in the new version
        self._data_dir = data_dir
        self._max_running = max_running
        self._job_threads = job_threads
        self._source: JobSource = source or LocalJobQueue(store)
        self._job_environment = job_environment or {}  # added to the job processes' environment
        # In a cluster a job may run on another server, whose changes wake no watcher here: they
        # read its record this often instead.
        self._watch_poll_s = watch_poll_s
        self._runners: list[asyncio.Task[None]] = []
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._kill_timers: dict[str, asyncio.TimerHandle] = {}
        self._cancel_requested: set[str] = set()
        self._changed: dict[str, asyncio.Event] = {}  # set, then replaced, on every change
        self._messages: dict[str, str] = {}  # latest log line of each running job

    def use_source(self, source: JobSource) -> None:
        """Take jobs from `source` (before `start`): a cluster's, made after this manager since
        it stops jobs through it."""
        self._source = source

    async def start(self) -> None:
        """Fail jobs a dead server left running, queue the ones it left queued, start runners."""
        await self._source.recover()
        (self._data_dir / "jobs").mkdir(parents=True, exist_ok=True)
        self._runners = [
            asyncio.create_task(self._run_queue(), name=f"job-runner-{i}")
            for i in range(self._max_running)
        ]

    async def stop(self) -> None:
        """Stop running jobs (marked failed: the server stopped) and the runners."""
        for task in self._runners:
            task.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        self._runners = []

    async def submit(self, kind: int, avatar_ids: list[str], options: job_pb2.TrainingOptions) -> JobRecord:
        record = await asyncio.to_thread(self._store.add_job, kind, avatar_ids, options)
        self._source.queued(record.id)
        return record

    async def get(self, job_id: str) -> JobRecord:
        return await asyncio.to_thread(self._store.get_job, job_id)

    async def cancel(self, job_id: str) -> JobRecord:
        record = await self.get(job_id)
        if record.finished:
            return record
        self._cancel_requested.add(job_id)
        process = self._processes.get(job_id)
        if process is not None:
            self._ask_to_stop(job_id, process)
        elif record.state == job_pb2.JOB_STATE_QUEUED:
            await self._update(job_id, "cancelled before it started", state=job_pb2.JOB_STATE_CANCELLED, ended_us=now_us())
        else:
            self._source.cancel_elsewhere(job_id)
        return await self.get(job_id)

    def stop_here(self, job_id: str) -> None:
        """Another server was asked to cancel a job this one runs: stop it."""
        process = self._processes.get(job_id)
        if process is not None:
            self._cancel_requested.add(job_id)
            self._ask_to_stop(job_id, process)

    async def watch(self, job_id: str) -> AsyncIterator[tuple[JobRecord, str]]:
        """The job's record now and after every change, with its latest log line, until it ends."""
        while True:
            changed = self._changed.setdefault(job_id, asyncio.Event())
            record = await self.get(job_id)
            yield record, self._messages.get(job_id, "")
            if record.finished:
                self._changed.pop(job_id, None)
                return
            try:
                await asyncio.wait_for(changed.wait(), self._watch_poll_s)
            except TimeoutError:
                pass  # read the record again: it may have changed on another server

    async def _run_queue(self) -> None:
        while True:
            job_id = await self._source.next_job()
            try:
                await self._run(job_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bug here must not stop the queue
                log.exception("job %s: runner failed", job_id)
                # a store error (a full disk) says what to do; anything else is a bug of ours
                reason = str(error) if isinstance(error, StoreError) else f"internal error: {error}"
                await self._update(job_id, "", state=job_pb2.JOB_STATE_FAILED, error=reason, ended_us=now_us())

    async def _run(self, job_id: str) -> None:
        record = await self.get(job_id)
        if record.state != job_pb2.JOB_STATE_QUEUED:
            return  # cancelled while queued
        await self._update(job_id, "starting", state=job_pb2.JOB_STATE_RUNNING, started_us=now_us())
        log_path = self._data_dir / "jobs" / f"{job_id}.log"
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "freeavatar_server.jobs.worker",
                "--data-dir", str(self._data_dir), "--job-id", job_id,
                "--threads", str(self._job_threads),
                env={**os.environ, **self._job_environment} if self._job_environment else None,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
            )  # fmt: skip
        self._processes[job_id] = process
        if job_id in self._cancel_requested:
            self._ask_to_stop(job_id, process)
        outcome: dict[str, object] = {}
        try:
            assert process.stdout is not None
            async for line in process.stdout:
                event = _parse_event(line)
                if "progress" in event:
                    await self._update(
                        job_id, str(event.get("message", "")), progress=event["progress"],
                        **({"metrics": event["metrics"]} if event.get("metrics") else {}),
                    )  # fmt: skip
                elif event:
                    outcome = event
            code = await process.wait()
        except asyncio.CancelledError:
            await _terminate(process)
            await asyncio.shield(
                self._update(job_id, "", state=job_pb2.JOB_STATE_FAILED, error=SERVER_STOPPED, ended_us=now_us())
            )
            raise
        finally:
            self._processes.pop(job_id, None)
            timer = self._kill_timers.pop(job_id, None)
            if timer is not None:
                timer.cancel()
        await self._finish(job_id, outcome, code, log_path)

    async def _finish(self, job_id: str, outcome: dict[str, object], code: int, log_path: Path) -> None:
        cancelled = job_id in self._cancel_requested
        self._cancel_requested.discard(job_id)
        if "result" in outcome and code == 0:
            for result in outcome["result"]:  # type: ignore[attr-defined]
                await asyncio.to_thread(
                    self._store.publish_model, job_id, result["avatar_id"], result["model_kind"],
                    result["metrics"], result["model_dir"],
                )  # fmt: skip
                if self._on_model_published is not None:
                    await self._on_model_published(result["avatar_id"])
            await self._update(job_id, "published", final=True)
        elif cancelled or "cancelled" in outcome:
            await self._update(job_id, "cancelled", state=job_pb2.JOB_STATE_CANCELLED, ended_us=now_us(), final=True)
        else:
            error = str(outcome.get("error") or _exit_reason(code, log_path))
            await self._update(job_id, error, state=job_pb2.JOB_STATE_FAILED, error=error, ended_us=now_us(), final=True)

    def _ask_to_stop(self, job_id: str, process: asyncio.subprocess.Process) -> None:
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.write(b"cancel\n")
        loop = asyncio.get_running_loop()
        self._kill_timers[job_id] = loop.call_later(KILL_AFTER_S, _kill, process)

    async def _update(self, job_id: str, message: str, final: bool = False, **fields: object) -> None:
        if fields:
            await asyncio.to_thread(self._store.update_job, job_id, **fields)
        if message:
            self._messages[job_id] = message
        changed = self._changed.pop(job_id, None)
        if changed is not None:
            changed.set()
        if final:
            self._messages.pop(job_id, None)


def _parse_event(line: bytes) -> dict[str, object]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _exit_reason(code: int, log_path: Path) -> str:
    if code < 0:
        reason = f"the job process was killed by {signal.Signals(-code).name}"
    else:
        reason = f"the job process exited with code {code} and no result"
    lines = log_path.read_text(errors="replace").strip().splitlines() if log_path.exists() else []
    return f"{reason}: {lines[-1]}" if lines else reason


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """Ask a job process to stop; kill it if it has not within a few seconds."""
    if process.returncode is not None:
        return
    if process.stdin is not None and not process.stdin.is_closing():
        process.stdin.write(b"cancel\n")
    try:
        await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        process.kill()
        await process.wait()
