"""`freeavatar bench cluster`: what the hop between two servers of a cluster costs, and how many
rig frames one NATS connection carries, so the capacity of N servers can be planned from the
one-server figure (docs/cluster.md).

Both ends are the servers' own fan-out (`cluster.fanout.NatsFanout`) on two NATS connections, as
two servers have them, against a `nats-server` on loopback (started here unless `nats_url` names
one). A message is one source frame's rig frames: `avatars` frames of `controls` values each, as
a server publishes them.

- hop: from `publish` on server A's side to `deliver` on server B's side (both clocks are this
  process's), at `actors` x 30 fps for `seconds`; p50 and p99.
- throughput: A publishes as fast as its connection takes messages for `seconds`; the rate B
  received them at, in messages (source frames) and rig frames per second, and what was lost.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import nats
import numpy as np

from freeavatar._proto import rig_pb2
from freeavatar_server.cluster.fanout import NatsFanout
from freeavatar_server.tools.cluster_services import LocalNats

SESSION = "bench"


@dataclass(frozen=True)
class BenchSettings:
    seconds: float = 5.0
    actors: int = 20  # at 30 fps each, for the hop latency
    avatars: int = 4  # rig frames per message
    controls: int = 52  # values per rig frame (an ARKit rig)
    nats_url: str | None = None  # None: start a nats-server on loopback


def source_frame(actor: int, sequence: int, settings: BenchSettings) -> list[rig_pb2.RigFrame]:
    values = np.random.default_rng(sequence).random(settings.controls, np.float32).tolist()
    return [
        rig_pb2.RigFrame(
            avatar_id=f"avatar-{avatar}", session_id=SESSION, actor_id=f"actor-{actor}", sequence=sequence,
            capture_time_us=time.time_ns() // 1000, emit_time_us=time.time_ns() // 1000, values=values,
            face_present=True, confidence=0.9, head_pose=rig_pb2.HeadPose(yaw=1.0, pitch=2.0, roll=3.0),
        )  # fmt: skip
        for avatar in range(settings.avatars)
    ]


async def bench_cluster(settings: BenchSettings = BenchSettings()) -> dict[str, object]:
    local = None if settings.nats_url else LocalNats().start()
    url = settings.nats_url or (local.url if local else "")
    try:
        return {
            "hop_latency_ms": await _hop(url, settings),
            "one_connection": await _throughput(url, settings),
            "settings": {"seconds": settings.seconds, "actors": settings.actors, "avatars": settings.avatars, "controls": settings.controls},
            "message_bytes": len(rig_pb2.RigFrameBatch(frames=source_frame(0, 1, settings)).SerializeToString()),
        }
    finally:
        if local is not None:
            local.stop()


async def _pair(url: str, deliver) -> tuple[NatsFanout, NatsFanout, list[nats.NATS]]:
    a, b = await nats.connect(url, no_echo=True), await nats.connect(url, no_echo=True)
    sender, receiver = NatsFanout(a, lambda *_: None), NatsFanout(b, deliver)
    sender.start()
    receiver.start()
    receiver.listen(SESSION, True)
    await asyncio.sleep(0.2)  # the subscription reaches the server
    await b.flush()
    return sender, receiver, [a, b]


async def _close(sender: NatsFanout, receiver: NatsFanout, connections: list[nats.NATS]) -> None:
    await sender.stop()
    await receiver.stop()
    for connection in connections:
        await connection.close()


async def _hop(url: str, settings: BenchSettings) -> dict[str, float]:
    sent_at: dict[tuple[str, int], float] = {}
    latencies: list[float] = []

    def deliver(session_id: str, batch: rig_pb2.RigFrameBatch) -> None:
        first = batch.frames[0]
        started = sent_at.pop((first.actor_id, first.sequence), None)
        if started is not None:
            latencies.append((time.perf_counter() - started) * 1000)

    sender, receiver, connections = await _pair(url, deliver)
    try:
        interval = 1 / 30
        ticks = int(settings.seconds * 30)
        next_tick = time.perf_counter()
        for sequence in range(1, ticks + 1):
            for actor in range(settings.actors):  # the actors' frames spread over the tick
                frames = source_frame(actor, sequence, settings)
                sent_at[(f"actor-{actor}", sequence)] = time.perf_counter()
                sender.publish(SESSION, frames)
                await asyncio.sleep(interval / settings.actors / 2)
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
        await asyncio.sleep(0.5)
    finally:
        await _close(sender, receiver, connections)
    sent = ticks * settings.actors
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"), float("nan"))
    return {"p50": float(p50), "p99": float(p99), "messages": sent, "received": len(latencies)}


async def _throughput(url: str, settings: BenchSettings) -> dict[str, float]:
    received = 0
    first_at = last_at = 0.0

    def deliver(session_id: str, batch: rig_pb2.RigFrameBatch) -> None:
        nonlocal received, first_at, last_at
        last_at = time.perf_counter()
        first_at = first_at or last_at
        received += 1

    sender, receiver, connections = await _pair(url, deliver)
    frames = source_frame(0, 1, settings)
    published = 0
    try:
        deadline = time.perf_counter() + settings.seconds
        while time.perf_counter() < deadline:
            for _ in range(256):  # a burst, then let the publishing task hand it to NATS
                sender.publish(SESSION, frames)
                published += 1
            await asyncio.sleep(0)
        await asyncio.sleep(1.0)
    finally:
        outbox_drops = sender.stats.outbox_drops
        await _close(sender, receiver, connections)
    rate = received / (last_at - first_at) if received > 1 else 0.0
    return {
        "messages_per_s": rate,
        "rig_frames_per_s": rate * settings.avatars,
        "actors_at_30fps": rate / 30,
        "published": published,
        "received": received,
        "dropped_before_nats": outbox_drops,
    }
