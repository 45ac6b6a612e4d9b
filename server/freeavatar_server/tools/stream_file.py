"""`freeavatar stream`: play a video file as an actor's camera through a running server, and
optionally on to Unreal (`--livelink`) or a VMC app (`--vmc`)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.live import Live
from rich.table import Table

from freeavatar import AsyncClient, FreeAvatarError
from freeavatar.cli_avatars import console, fail
from freeavatar.cli_outputs import describe
from freeavatar.outputs import OutputProtocol, VmcNames
from freeavatar.stream import ActorFrame, RigStream
from freeavatar_server.media import encode_jpeg


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 30)
            return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], rate
    except (av.error.FFmpegError, IndexError) as error:
        fail(f"cannot read video {path}: {error}", code=2)


async def _stream(
    frames: list[np.ndarray],
    fps: float,
    avatars: list[str],
    client: AsyncClient,
    outputs: OutputOptions,
    session_id: str = "",
    token: str = "",
) -> None:
    known = {a.name: a.id for a in await client.list_avatars()}
    avatar_ids = [known.get(a, a) for a in avatars]
    if not session_id and not outputs.targets:
        await _play(frames, fps, client, avatar_ids=avatar_ids)  # a private session for the call
        return
    own_session = not session_id  # outputs belong to a session: one for this run, unless given
    if own_session:
        session = await client.create_session("stream")
        session_id, token = session.id, session.token
    actor_id, added = "", []
    try:
        actor_id = (await client.join_session(session_id, avatar_ids, "video", token)).id
        for avatar_id in avatar_ids:
            for protocol, target in outputs.targets:
                added.append(
                    await client.add_output(
                        session_id, avatar_id, protocol, target,
                        subject_name=outputs.subject, vmc_names=outputs.vmc_names, token=token,
                    )  # fmt: skip
                )
                console.print(f"sending {describe(added[-1])}")
        await _play(frames, fps, client, session_id=session_id, actor_id=actor_id, token=token)
    finally:  # leave a session that outlives the run as it was
        if own_session:
            await client.close_session(session_id)
        else:
            for output in added:
                await client.remove_output(session_id, output.id)
            if actor_id:
                await client.leave_session(session_id, actor_id)


async def _play(frames: list[np.ndarray], fps: float, client: AsyncClient, **target: Any) -> None:
    sent = deque(maxlen=int(fps * 2))
    received: dict[str, deque[float]] = {}
    latency = deque(maxlen=300)

    async def camera() -> AsyncIterator[ActorFrame]:
        started = time.monotonic()
        for index, frame in enumerate(frames):
            await asyncio.sleep(max(0.0, started + index / fps - time.monotonic()))
            sent.append(time.monotonic())
            yield ActorFrame(encode_jpeg(frame), capture_time_us=time.time_ns() // 1000)

    def table(stream_controls: dict) -> Table:
        view = Table("what", "rate (1/s)", "latency p50 ms")
        view.add_row("frames sent", f"{_rate(sent):.1f}", "")
        for avatar_id, times in received.items():
            name = stream_controls[avatar_id].avatar_name if avatar_id in stream_controls else avatar_id
            p50 = f"{np.median(latency):.1f}" if latency else ""
            view.add_row(f"rig frames {name}", f"{_rate(times):.1f}", p50)
        return view

    rigs: RigStream = client.animate(camera(), **target)
    with Live(table({}), refresh_per_second=4) as live:
        async for rig in rigs:
            received.setdefault(rig.avatar_id, deque(maxlen=int(fps * 2))).append(time.monotonic())
            latency.append((time.time_ns() // 1000 - rig.capture_time_us) / 1000)
            live.update(table(rigs.controls))


def _rate(times: deque[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


@dataclass(frozen=True)
class OutputOptions:
    """Engine outputs for every streamed avatar (`--livelink`, `--vmc`)."""

    targets: list[tuple[OutputProtocol, str]] = field(default_factory=list)
    vmc_names: VmcNames = VmcNames.AUTO
    subject: str = ""


def stream_video(
    video: Path,
    avatars: list[str],
    fps: float | None,
    server: str,
    api_key: str | None,
    tls_ca: Path | None,
    outputs: OutputOptions | None = None,
    session_id: str = "",
    token: str = "",
) -> None:
    outputs = outputs or OutputOptions()
    if any(p is OutputProtocol.VMC for p, _ in outputs.targets) and len(avatars) > 1:
        fail("--vmc drives one avatar (VMC has no subjects): give one --avatar", code=2)
    if outputs.subject and len(avatars) > 1:
        fail("--subject names one avatar's Live Link subject: give one --avatar", code=2)
    frames, native_fps = read_video(video)

    async def run() -> None:
        async with AsyncClient(server, api_key=api_key, root_certificates=tls_ca) as client:
            await _stream(frames, fps or native_fps, avatars, client, outputs, session_id, token)

    try:
        asyncio.run(run())
    except FreeAvatarError as error:
        fail(str(error))
