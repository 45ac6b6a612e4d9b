"""Prometheus exposition of the live pipeline's stats (`freeavatar serve --metrics-port N`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from freeavatar._proto import stream_pb2


class PipelineCollector(Collector):
    """Reads a stats snapshot on the event loop (which owns the counters) at every scrape."""

    def __init__(self, snapshot: Callable[[], stream_pb2.PipelineStats], loop: asyncio.AbstractEventLoop) -> None:
        self._snapshot = snapshot
        self._loop = loop

    def collect(self) -> Iterator[Metric]:
        stats = asyncio.run_coroutine_threadsafe(_call(self._snapshot), self._loop).result(timeout=5)
        yield CounterMetricFamily("freeavatar_frames_in", "Actor frames received", value=stats.frames_in)
        yield CounterMetricFamily("freeavatar_frames_out", "Rig frames published", value=stats.frames_out)
        yield CounterMetricFamily(
            "freeavatar_subscriber_drops", "Rig frames slow subscribers never got", value=stats.subscriber_drops
        )
        yield GaugeMetricFamily("freeavatar_sessions", "Live sessions", value=stats.active_sessions)
        yield GaugeMetricFamily("freeavatar_actors", "Actors in live sessions", value=stats.active_actors)
        latency = GaugeMetricFamily(
            "freeavatar_stage_ms", "Recent per-stage time, milliseconds", labels=["stage", "quantile"]
        )
        processed = CounterMetricFamily("freeavatar_stage_processed", "Frames through a stage", labels=["stage"])
        dropped = CounterMetricFamily(
            "freeavatar_stage_dropped", "Stale frames dropped before a stage (latest frame wins)", labels=["stage"]
        )
        spent = CounterMetricFamily(
            "freeavatar_stage_seconds", "Time spent in a stage (its mean: seconds / processed)", labels=["stage"]
        )
        for stage in stats.stages:
            latency.add_metric([stage.name, "0.5"], stage.p50_ms)
            latency.add_metric([stage.name, "0.99"], stage.p99_ms)
            processed.add_metric([stage.name], stage.processed)
            dropped.add_metric([stage.name], stage.dropped)
            spent.add_metric([stage.name], stage.total_ms / 1000)
        yield from (latency, processed, dropped, spent)


async def _call(snapshot: Callable[[], stream_pb2.PipelineStats]) -> stream_pb2.PipelineStats:
    return snapshot()


def serve_metrics(
    snapshot: Callable[[], stream_pb2.PipelineStats], host: str, port: int
) -> tuple[object, int]:
    """Start the /metrics HTTP endpoint on its own thread; returns (server, bound port)."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(snapshot, asyncio.get_running_loop()))
    server, thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_port
