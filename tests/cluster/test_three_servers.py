"""The issue's cluster test: three server processes, NATS and PostgreSQL on loopback.

Actors stream to servers A and B, a gRPC subscriber listens on C and a WHEP subscriber on B;
all hear every actor. A is killed (SIGKILL) mid-stream: its actor's SDK call resumes through B
within 2 s, nobody else sees an error, and after A restarts the registry and the job records are
as they were.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from freeavatar import AsyncClient, JobState, Resume
from freeavatar.stream import ActorFrame, RigFrame
from freeavatar_server.tools.cluster_services import LocalNats, free_port
from freeavatar_server.tools.whip_client import WebRtcPeer

SERVING = health_pb2.HealthCheckResponse.SERVING


class ServerProcess:
    """`freeavatar serve` in a cluster, as its own process, on a fixed port (so it can restart there)."""

    def __init__(self, data_dir: Path, nats: LocalNats, store_url: str, http_port: int | None = None) -> None:
        self.port = free_port()
        self.command = [
            sys.executable, "-m", "freeavatar", "serve", "--data-dir", str(data_dir), "--port", str(self.port),
            "--cluster", nats.url, "--store", store_url, "--builtin-avatars", "--pipeline-workers", "1",
            "--log-level", "WARNING", *(["--http-port", str(http_port)] if http_port else []),
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    async def serving(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.process is not None and self.process.poll() is None, "the server exited"
                try:
                    if (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status == SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.address} never served")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def servers(tmp_path: Path, nats: LocalNats, store_url: str) -> Iterator[dict[str, ServerProcess]]:
    shared = tmp_path / "shared"  # the data dir (model files) every server of the cluster mounts
    http_b = free_port()
    running = {
        "a": ServerProcess(shared, nats, store_url),
        "b": ServerProcess(shared, nats, store_url, http_port=http_b),
        "c": ServerProcess(shared, nats, store_url),
    }
    running["b"].http_port = http_b  # type: ignore[attr-defined]
    yield running
    for server in running.values():
        server.stop()


async def camera(clip: list[bytes], stop: asyncio.Event, fps: float = 30.0) -> AsyncIterator[ActorFrame]:
    """The clip over and over at `fps`, until `stop`."""
    index = 0
    while not stop.is_set():
        yield ActorFrame(clip[index % len(clip)])
        index += 1
        await asyncio.sleep(1 / fps)


async def collect(stream: AsyncIterator[RigFrame], into: list[tuple[float, RigFrame]]) -> None:
    async for frame in stream:
        into.append((time.monotonic(), frame))


async def test_three_servers_and_one_killed(servers: dict[str, ServerProcess], clip: list[bytes]) -> None:
    a, b, c = servers["a"], servers["b"], servers["c"]
    a.start()
    await a.serving()  # first alone: it installs the built-in avatars the others find
    b.start(), c.start()
    await asyncio.gather(b.serving(), c.serving())

    at_a, at_b, at_c = AsyncClient(a.address), AsyncClient(b.address), AsyncClient(c.address)
    # Actor 1's client knows A, then B: the channel goes on to B when A is gone (a load
    # balancer in front of the cluster does the same for a client that knows one address).
    failover = AsyncClient(f"ipv4:{a.address},{b.address}")
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        avatars = {x.name: x.id for x in await at_a.list_avatars()}
        failed_job = await at_c.train_renderer(avatars["robot"])  # no samples: fails, with its record
        failed_job = await asyncio.wait_for(at_c.wait_job(failed_job.id), 60)  # before A may die with it
        assert failed_job.state == JobState.FAILED and "samples" in failed_job.error
        session = await at_a.create_session("meeting")
        ada = await at_a.join_session(session.id, [avatars["robot"]], "ada", token=session.token)
        bob = await at_b.join_session(session.id, [avatars["cartoon"]], "bob", token=session.token)

        heard_c: list[tuple[float, RigFrame]] = []
        tasks.append(asyncio.create_task(collect(at_c.subscribe(session.id, token=session.token), heard_c)))
        whep = WebRtcPeer(f"http://127.0.0.1:{b.http_port}")  # type: ignore[attr-defined]
        await whep.subscribe(f"/whep/sessions/{session.id}")
        await asyncio.sleep(0.5)  # the subscriptions reach NATS

        own_ada: list[tuple[float, RigFrame]] = []
        own_bob: list[tuple[float, RigFrame]] = []
        ada_stream = failover.animate(
            camera(clip, stop), session_id=session.id, actor_id=ada.id, token=session.token,
            resume=Resume(first_delay_s=0.05, max_delay_s=0.5, within_s=10),
        )  # fmt: skip
        tasks.append(asyncio.create_task(collect(ada_stream, own_ada)))
        tasks.append(asyncio.create_task(
            collect(at_b.animate(camera(clip, stop), session_id=session.id, actor_id=bob.id, token=session.token), own_bob)
        ))  # fmt: skip

        async def heard_both(frames: list[tuple[float, RigFrame]], since: float) -> None:
            for _ in range(200):
                if {f.actor_id for t, f in frames if t > since} >= {ada.id, bob.id}:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("the subscriber did not hear both actors")

        await heard_both(heard_c, 0)
        whep_frames: list[tuple[float, RigFrame]] = []

        async def read_whep() -> None:
            while True:
                whep_frames.append((time.monotonic(), await whep.next_frame(30)))

        tasks.append(asyncio.create_task(read_whep()))
        await heard_both(whep_frames, 0)

        a.kill()
        killed = time.monotonic()
        for _ in range(100):  # ada's call resumes through B: her own frames come back from there
            if any(t > killed for t, _ in own_ada):
                break
            await asyncio.sleep(0.05)
        ada_task = tasks[1]
        assert not ada_task.done() or ada_task.cancelled(), f"ada's stream ended: {ada_task.exception()!r}"
        resumed = min((t for t, _ in own_ada if t > killed), default=float("inf")) - killed
        assert resumed < 2.0, f"ada's stream resumed {resumed:.2f} s after A died"
        await heard_both(heard_c, killed + resumed)  # C hears ada again, now through B
        await heard_both(whep_frames, killed + resumed)
        assert ada_stream.resumes >= 1
        for task in tasks:  # nobody else saw an error
            assert not task.done(), task

        a.start()
        await a.serving()
        assert {x.name: x.id for x in await at_a.list_avatars()} == avatars
        assert await at_a.get_job(failed_job.id) == failed_job
        assert (await at_a.get_session(session.id)).id == session.id
    finally:
        stop.set()
        await asyncio.sleep(0.3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in (at_a, at_b, at_c, failover):
            await client.close()
        if "whep" in locals():
            await whep.close(delete=False)
    print(f"ada resumed {resumed * 1000:.0f} ms after A was killed", file=sys.stderr)
