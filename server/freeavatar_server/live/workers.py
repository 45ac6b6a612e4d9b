"""The analysis workers: processes of their own, one per core, each with its own models
(`live.analysis.Analyser`) and the face trackers of the actors pinned to it.

Python runs one thread at a time, so the heavy half of the live pipeline runs in worker
processes (with a thread pool the server used about 1.3 of two cores at 8 actors). An actor's
stream is pinned to one worker, because its face tracker lives there.

A worker runs in ticks. Each actor has at most one frame in the worker at a time (the
pipeline waits for it, and a newer frame replaces a waiting one: latest frame wins). The
frames that arrive while a tick runs go together as the next tick, and inside, each model
runs once for every actor's face. After answering a tick, the worker runs the face meshes
that came due in it, before it reads the next.

The hand-off: the frames' pixels go through a block of shared memory the server owns
(`live.frame_arena`); the pipe between the server and the worker carries only a tick's small
descriptors and, back, its answers (a face box, a head pose, the blendshapes and a few control
vectors a frame). The server reads the pipe from its event loop (`add_reader`) and learns of a
worker's death from its process sentinel: no thread hops on the way (a ProcessPoolExecutor
round trip took about 1.3 ms at one actor; its queues cross three threads).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from freeavatar_server.live.analysis import (
    Analyser,
    Analysis,
    AnalysisFailed,
    AnalysisOptions,
    AnalysisRequest,
    BadFrame,
    WorkerLost,
)
from freeavatar_server.live.frame_arena import ArenaPixels, ArenaReader, FrameArena

log = logging.getLogger(__name__)

Result = Analysis | BadFrame | AnalysisFailed

# After answering a tick, a worker with meshes to run first waits this long for the next tick
# (which ends the wait at once). The server process its answer wakes is often placed on the
# worker's own core (Linux wakes a task beside its waker) and would otherwise wait behind the
# mesh: at one actor the hand-off's p99 was 3.9-5.0 ms without the wait, 1.2-1.3 with it
# (docs/performance.md).
SERVER_HEAD_START_S = 0.002

# What the server sends a worker ("tick", [AnalysisRequest]) or ("forget", stream key); what
# comes back: ("ready", pid), ("failed", why its models did not load), ("answers", [Result]).


def _worker_main(connection: Connection, options: AnalysisOptions, arena_name: str) -> None:
    """A worker process: load the models, then answer ticks until the server goes (its end of
    the pipe closes, which a killed server's does too)."""
    # The server's own signal handling stops the workers; a Ctrl-C or a SIGTERM to the process
    # group must not kill a worker mid-frame (or raise inside one).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        analyser = Analyser(options)
        arena = ArenaReader.attach(arena_name)
    except Exception as error:
        connection.send(("failed", f"the analysis worker could not load its models: {type(error).__name__}: {error}"))
        return
    connection.send(("ready", os.getpid()))
    try:
        while True:
            kind, payload = connection.recv()
            if kind == "tick":
                requests = [_unpacked(request, arena) for request in payload]
                connection.send(("answers", analyser.analyse_batch(requests)))
                if analyser.meshes_due:  # poll only looks: a tick that came is read after the meshes
                    connection.poll(SERVER_HEAD_START_S)
                analyser.refresh_meshes()  # after the answers: no frame waits for its own mesh
            elif kind == "forget":
                analyser.forget(payload)
    except (EOFError, BrokenPipeError):  # the server has gone
        return


def _unpacked(request: AnalysisRequest, arena: ArenaReader) -> AnalysisRequest:
    pixels = request.pixels
    return replace(request, pixels=arena.pixels(pixels)) if isinstance(pixels, ArenaPixels) else request


class WorkerDied(Exception):
    """The worker process exited with a call in flight."""


class WorkerProcess:
    """One running worker process and the server's end of its pipe, read from the event loop.
    Replies come in the order of the calls that ask for them."""

    def __init__(self, options: AnalysisOptions, arena_name: str) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._connection, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(child, options, arena_name), name="analysis-worker", daemon=True
        )
        self.process.start()
        child.close()
        self._replies: list[asyncio.Future[Any]] = []
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._connection.fileno(), self._on_reply)
        self._loop.add_reader(self.process.sentinel, self._on_exit)
        self.alive = True

    def ask(self, kind: str, payload: object) -> asyncio.Future[Any]:
        """Send a call that gets a reply."""
        reply = self.expect()
        self.tell(kind, payload)
        return reply

    def expect(self) -> asyncio.Future[Any]:
        """The next reply (the first, "ready", answers the start itself); fails with
        WorkerDied if the process exits first."""
        reply = self._loop.create_future()
        if self.alive:
            self._replies.append(reply)
        else:
            reply.set_exception(WorkerDied())
        return reply

    def tell(self, kind: str, payload: object) -> None:
        """Send a call that gets no reply."""
        if self.alive:
            try:
                self._connection.send((kind, payload))
            except OSError:  # it has just died: the sentinel will say so
                pass

    def _on_reply(self) -> None:
        try:
            kind, payload = self._connection.recv()
        except (EOFError, OSError):
            self._on_exit()
            return
        reply = self._replies.pop(0)
        if reply.done():  # its caller has gone
            return
        if kind == "failed":
            reply.set_exception(AnalysisFailed(payload))
        else:
            reply.set_result(payload)

    def _on_exit(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self._loop.remove_reader(self._connection.fileno())
        self._loop.remove_reader(self.process.sentinel)
        for reply in self._replies:
            if not reply.done():
                reply.set_exception(WorkerDied())
        self._replies = []

    def stop(self) -> None:
        """Close the pipe (the worker goes once it sees so, after any tick it is running) and
        make sure it has gone."""
        self._on_exit()
        self._connection.close()
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)


class AnalysisWorker:
    """One worker process, started on first use and replaced when it dies. It owns the task
    that sends its ticks, and the shared memory its frames go through."""

    def __init__(self, options: AnalysisOptions) -> None:
        self._options = options
        self._arena = FrameArena.create()
        self._process: WorkerProcess | None = None
        self._start_error: AnalysisFailed | None = None  # models that do not load stay so
        self._closed = False
        self.streams: set[str] = set()
        self.pid: int | None = None  # the worker process, as last heard from
        self.restarts = 0
        self.ticks = 0  # calls that carried frames (each carries every frame waiting then)
        self._waiting: list[tuple[AnalysisRequest, asyncio.Future[Analysis]]] = []
        self._ticks: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the process and wait until its models are loaded; AnalysisFailed if they do
        not load. Idempotent while it lives."""
        await self._running()

    async def analyse(self, request: AnalysisRequest) -> Analysis:
        """The analysis of one frame, in the worker's next tick. BadFrame: the frame cannot be
        read; WorkerLost: workers died on it; AnalysisFailed: the analysis did not run."""
        if self._closed:
            raise WorkerLost("the server is shutting down")
        future: asyncio.Future[Analysis] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._ticks is None or self._ticks.done():
            self._ticks = asyncio.create_task(self._run_ticks(), name="analysis-ticks")
        analysis = await future
        self.pid = analysis.worker_pid
        return analysis

    def release(self, stream: str) -> None:
        """The stream ended: drop its face tracker (after any frame of it still in the worker)."""
        self.streams.discard(stream)
        if self._process is not None:
            self._process.tell("forget", stream)

    def close(self) -> None:
        """Stop at once: the tick task is cancelled (`stop` also waits for it), every frame
        waiting fails with WorkerLost, the process goes and the shared memory with it.
        Idempotent (the shared memory is unlinked once)."""
        if self._closed:
            return
        self._closed = True
        if self._ticks is not None:
            self._ticks.cancel()  # a tick task cancelled before it ran never fails its frames:
        self._fail_waiting()  # those still waiting are failed here
        if self._process is not None:
            self._process.stop()
            self._process = None
        self._arena.close()

    async def stop(self) -> None:
        self.close()
        if self._ticks is not None:
            await asyncio.gather(self._ticks, return_exceptions=True)

    async def _run_ticks(self) -> None:
        """Send what waits as one tick, and again, until nothing waits."""
        batch: list[tuple[AnalysisRequest, asyncio.Future[Analysis]]] = []
        try:
            while self._waiting:
                batch, self._waiting = [w for w in self._waiting if not w[1].done()], []
                if not batch:  # their streams ended while they waited
                    continue
                self.ticks += 1
                try:
                    results = await self._tick([request for request, _ in batch])
                except (WorkerLost, AnalysisFailed) as error:
                    results = [error] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its stream ended meanwhile
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                batch = []
        finally:  # cancelled (the server is closing): no frame waits for ever
            self._fail_waiting(batch)

    async def _tick(self, requests: list[AnalysisRequest]) -> list[Result]:
        # A worker found dead by its call is replaced and the call sent again, once: the
        # process may have died idle. A second death on the same call is the call's fault (a
        # frame that crashes the decoder, say).
        for _ in range(2):
            process = await self._running()
            try:
                return await process.ask("tick", self._arena.pack(requests))
            except WorkerDied:
                self._forget_dead(process)
        raise WorkerLost("two analysis workers died in turn on this frame")

    async def _running(self) -> WorkerProcess:
        if self._closed:
            raise WorkerLost("the server is shutting down")
        if self._start_error is not None:
            raise self._start_error
        if self._process is None or not self._process.alive:
            if self._process is not None:
                self._forget_dead(self._process)
            process = self._process = WorkerProcess(self._options, self._arena.name)
            try:
                self.pid = await process.expect()
            except AnalysisFailed as error:
                self._start_error = error
                raise
            except WorkerDied:
                self._forget_dead(process)
                raise WorkerLost("an analysis worker died while it started") from None
        return self._process

    def _forget_dead(self, process: WorkerProcess) -> None:
        """Let a dead process go, once: two calls may both see one death, and the second must
        not stop the replacement the first has already started."""
        if process is self._process:
            log.error("an analysis worker (pid %s) died; a new one takes its streams", self.pid)
            process.stop()
            self._process, self.pid = None, None
            self.restarts += 1

    def _fail_waiting(self, batch: Sequence[tuple[AnalysisRequest, asyncio.Future[Analysis]]] = ()) -> None:
        for _, future in [*batch, *self._waiting]:
            if not future.done():
                future.set_exception(WorkerLost("the server is shutting down"))
        self._waiting = []


class AnalysisPool:
    """The server's analysis workers; each stream goes to the one with the fewest streams."""

    def __init__(self, workers: int, options: AnalysisOptions) -> None:
        if workers < 1:
            raise ValueError(f"need at least one analysis worker, got {workers}")
        self.workers = [AnalysisWorker(options) for _ in range(workers)]

    async def start(self) -> None:
        """Start every worker (idempotent); returns once all have their models loaded."""
        await asyncio.gather(*(w.start() for w in self.workers))

    def assign(self, stream: str) -> AnalysisWorker:
        worker = min(self.workers, key=lambda w: len(w.streams))
        worker.streams.add(stream)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    async def stop(self) -> None:
        """Close every worker and wait for their tick tasks to end."""
        await asyncio.gather(*(worker.stop() for worker in self.workers))
