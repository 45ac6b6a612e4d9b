"""The analysis workers: processes of their own, one per core, each with its own models
(`live.analysis.Analyser`) and the face trackers of the actors pinned to it.

Python runs one thread at a time, so the heavy half of the live pipeline runs in worker
processes (with a thread pool the server used about 1.3 of two cores at 8 actors). An actor's
stream is pinned to one worker, because its face tracker lives there.

A worker runs in ticks. Each actor has at most one frame in the worker at a time (the
pipeline waits for it, and a newer frame replaces a waiting one: latest frame wins). The
frames that arrive while a tick runs go together as the next tick: one call across the
process boundary for all of them, and inside, each model once for every actor's face. What
crosses the boundary is the frame as the client sent it (a JPEG of ~15 kB; WebRTC frames,
which the server decodes itself, go as raw RGB) and, back, a face box, a head pose, the
blendshapes and a few control vectors per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from freeavatar_server.live.analysis import (
    Analyser,
    Analysis,
    AnalysisFailed,
    AnalysisOptions,
    AnalysisRequest,
    BadFrame,
    WorkerLost,
)

log = logging.getLogger(__name__)

# A worker process's own Analyser, made by the pool's initializer: the one piece of
# process-wide state, because ProcessPoolExecutor calls plain functions.
_analyser: Analyser | None = None
_start_error: str | None = None  # why the models did not load, reported with every call


def _start_worker(options: AnalysisOptions) -> None:
    global _analyser, _start_error
    # The server's own signal handling shuts the pool down; a Ctrl-C or a SIGTERM to the
    # process group must not kill a worker mid-frame (or raise inside one).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A server killed without clean-up never tells its pool to stop (the worker holds both
    # ends of its call queue, so no EOF either): go when the parent goes.
    threading.Thread(target=_exit_with_parent, daemon=True, name="parent-watch").start()
    try:
        _analyser = Analyser(options)
    except Exception as error:  # an initializer that raises breaks the pool without a word
        _start_error = (
            f"the analysis worker could not load its models: {type(error).__name__}: {error}"
        )


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(0)


def _loaded() -> Analyser:
    if _analyser is None:
        raise AnalysisFailed(_start_error or "the analysis worker has no models")
    return _analyser


def _ready() -> int:
    _loaded()
    return os.getpid()


def _analyse_batch(requests: list[AnalysisRequest]) -> list[Analysis | BadFrame | AnalysisFailed]:
    return _loaded().analyse_batch(requests)


def _refresh_meshes() -> None:
    if _analyser is not None:
        _analyser.refresh_meshes()


def _forget(stream: str) -> None:
    if _analyser is not None:
        _analyser.forget(stream)


class AnalysisWorker:
    """One worker process (a one-process pool, so calls run in submission order), started on
    first use and replaced when it dies. It owns the task that sends its ticks."""

    def __init__(self, options: AnalysisOptions) -> None:
        self._options = options
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self.streams: set[str] = set()
        self.pid: int | None = None  # the worker process, as last heard from
        self.restarts = 0
        self.ticks = 0  # calls that carried frames (each carries every frame waiting then)
        self._waiting: list[tuple[AnalysisRequest, asyncio.Future[Analysis]]] = []
        self._ticks: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the process and wait until its models are loaded; AnalysisFailed if they do
        not load. Once it has answered, nothing: every animate call starts the pool, and a
        round trip would queue behind the frames of the streams already there (a worker that
        died since is replaced by its next call)."""
        if self.pid is None:
            self.pid = await self._call(_ready)

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
                    results = await self._call(_analyse_batch, [request for request, _ in batch])
                except (WorkerLost, AnalysisFailed) as error:
                    results = [error] * len(batch)
                self._after_tick()
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

    def _fail_waiting(self, batch: Sequence[tuple[AnalysisRequest, asyncio.Future[Analysis]]] = ()) -> None:
        for _, future in [*batch, *self._waiting]:
            if not future.done():
                future.set_exception(WorkerLost("the server is shutting down"))
        self._waiting = []

    def _after_tick(self) -> None:
        """The meshes that came due in the tick run now, after its answers (one process runs
        its calls in order, so before the next tick): no frame waits for its own mesh."""
        if self._pool is not None:
            with contextlib.suppress(BrokenProcessPool, RuntimeError):  # the next tick will find out
                self._pool.submit(_refresh_meshes)

    def release(self, stream: str) -> None:
        """The stream ended: drop its face tracker (after any frame of it still in the worker)."""
        self.streams.discard(stream)
        if self._pool is not None:
            with contextlib.suppress(BrokenProcessPool, RuntimeError):  # dead or shut down
                self._pool.submit(_forget, stream)

    def close(self) -> None:
        self._closed = True
        if self._ticks is not None:
            self._ticks.cancel()  # a tick task cancelled before it ran never fails its frames:
        self._fail_waiting()  # those still waiting are failed here
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _call(self, fn, *args):
        # A pool learns of its process's death a moment after it happens, so a call may go to
        # a worker that died idle: such a call is retried once on a fresh worker. A second
        # death on the same call is the call's fault (a frame that crashes the decoder, say).
        for _ in range(2):
            pool = self._executor()
            try:
                # Shielded: a cancelled stream must not cancel a call queued in the pool (on
                # Python 3.11 a cancelled pending call can wedge a broken pool, gh-107219).
                return await asyncio.shield(asyncio.wrap_future(pool.submit(fn, *args)))
            except BrokenProcessPool:
                self._forget_dead(pool)
        raise WorkerLost("two analysis workers died in turn on this frame")

    def _executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise WorkerLost("the server is shutting down")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded server
                initializer=_start_worker,
                initargs=(self._options,),
            )
        return self._pool

    def _forget_dead(self, pool: ProcessPoolExecutor) -> None:
        """Let a dead pool go, once: two streams may both see one death, and the second must
        not shut down the replacement the first has already started."""
        if pool is self._pool:
            log.error("an analysis worker (pid %s) died; a new one takes its streams", self.pid)
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool, self.pid = None, None
            self.restarts += 1


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
