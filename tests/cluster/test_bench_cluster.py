"""`freeavatar bench cluster` measures the hop and one connection's rate against a real nats-server."""

from __future__ import annotations

from freeavatar_server.tools.bench_cluster import BenchSettings, bench_cluster
from freeavatar_server.tools.cluster_services import LocalNats


async def test_bench_cluster_reports_the_hop_and_the_rate(nats: LocalNats) -> None:
    result = await bench_cluster(BenchSettings(seconds=0.5, actors=2, nats_url=nats.url))
    hop = result["hop_latency_ms"]
    assert hop["received"] == hop["messages"] == 30  # 0.5 s x 30 fps x 2 actors: none lost on loopback
    assert 0 < hop["p50"] <= hop["p99"] < 1000
    rate = result["one_connection"]
    assert rate["received"] > 0 and rate["rig_frames_per_s"] == rate["messages_per_s"] * 4
