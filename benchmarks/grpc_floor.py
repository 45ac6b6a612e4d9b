"""What gRPC alone costs one actor's frame: the floor under `freeavatar bench stream`'s latency.

    python benchmarks/grpc_floor.py [--frames 300] [--kb 15] [--json]

A grpc.aio server and client in two processes on loopback, one bidirectional stream, as the
animate call runs: a frame of `--kb` KB (the bench clip's 640x480 JPEGs are about 15 KB) goes
up at 30 fps and a 200-byte answer (about one batched rig message) comes straight back. No
protobuf and no analysis: the round trip is the transport's own, which every frame of the
server's latency carries on top of its stages. Prints the round trip's p50 / p90 / p99.
Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from collections.abc import AsyncIterator
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

import grpc
import numpy as np

METHOD = "/floor.Floor/Echo"
ANSWER_BYTES = 200
SERVER_START_S = 10.0


async def _answer(frames: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for frame in frames:
        yield frame[:ANSWER_BYTES]


async def _serve(port: Synchronized, stop: Event) -> None:
    server = grpc.aio.server()
    echo = grpc.stream_stream_rpc_method_handler(_answer)  # bytes in, bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Floor", {"Echo": echo}),))
    bound = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port.value = bound  # only once it answers
    while not stop.is_set():
        await asyncio.sleep(0.05)
    await server.stop(None)


def serve(port: Synchronized, stop: Event) -> None:  # the server process
    asyncio.run(_serve(port, stop))


def wait_for_port(port: Synchronized, server: multiprocessing.Process) -> int:
    deadline = time.monotonic() + SERVER_START_S
    while not port.value:
        if not server.is_alive() or time.monotonic() > deadline:
            raise SystemExit(f"the gRPC server process did not start (exit code {server.exitcode})")
        time.sleep(0.01)
    return port.value


async def round_trips(port: int, frames: int, kb: int, fps: float = 30.0) -> np.ndarray:
    """Each frame's round trip in ms, the first second's left out (the channel warming up)."""
    payload = bytes(kb * 1000)
    ms = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(METHOD)()
        start = time.perf_counter()
        for i in range(frames):
            await asyncio.sleep(max(0.0, start + i / fps - time.perf_counter()))
            sent = time.perf_counter()
            await call.write(payload)
            await call.read()
            ms.append((time.perf_counter() - sent) * 1000)
        await call.done_writing()
    return np.array(ms[int(fps) :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--kb", type=int, default=15, help="frame size in KB")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.frames <= 30:
        parser.error("--frames must be more than 30 (the first second is left out)")
    if args.kb <= 0:
        parser.error("--kb must be at least 1")

    port, stop = multiprocessing.Value("i", 0), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, stop), daemon=True)
    server.start()
    try:
        ms = asyncio.run(round_trips(wait_for_port(port, server), args.frames, args.kb))
    finally:
        stop.set()
        server.join(timeout=5)
    p50, p90, p99 = (round(float(v), 3) for v in np.percentile(ms, [50, 90, 99]))
    result = {"frames": len(ms), "frame_kb": args.kb, "round_trip_ms": {"p50": p50, "p90": p90, "p99": p99}}
    print(json.dumps(result) if args.json else f"gRPC round trip, {args.kb} KB up, {ANSWER_BYTES} B back: "
          f"p50 {p50} ms, p90 {p90}, p99 {p99} ({len(ms)} frames)")  # fmt: skip


if __name__ == "__main__":
    main()
