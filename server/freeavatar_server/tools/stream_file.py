"""`freeavatar stream`: play a video file as an actor's camera through a running server, and
optionally on to Unreal (`--livelink`) or a VMC app (`--vmc`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from freeavatar import AsyncClient, FreeAvatarError
from freeavatar.cli_common import Remote, console, err_console, fail
from freeavatar.cli_outputs import describe
from freeavatar.outputs import OutputProtocol, VmcNames
from freeavatar.rig import RigControl, RigSpec
from freeavatar.stream import ActorFrame, RigFrame, RigStream
from freeavatar_server import media
from freeavatar_server.media import encode_jpeg

TOP_CONTROLS = 5  # controls shown per avatar in the live view
BAR_WIDTH = 20


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    try:
        return media.read_video(path)
    except media.VideoError as error:
        fail(str(error), code=2)


async def _stream(
    frames: list[np.ndarray],
    fps: float,
    avatars: list[str],
    client: AsyncClient,
    outputs: OutputOptions,
    session_id: str = "",
    token: str = "",
    as_json: bool = False,
) -> None:
    listed = await client.list_avatars()
    known = {a.name: a.id for a in listed}
    avatar_ids = [known.get(a, a) for a in avatars]
    view = StreamView(fps, {a.id: a.spec for a in listed}, as_json)
    if not session_id and not outputs.targets:
        await _play(frames, fps, client, view, avatar_ids=avatar_ids)  # a private session for the call
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
                view.note(f"sending {describe(added[-1])}")
        await _play(frames, fps, client, view, session_id=session_id, actor_id=actor_id, token=token)
    finally:  # leave a session that outlives the run as it was
        if own_session:
            await client.close_session(session_id)
        else:
            for output in added:
                await client.remove_output(session_id, output.id)
            if actor_id:
                await client.leave_session(session_id, actor_id)


async def _play(
    frames: list[np.ndarray], fps: float, client: AsyncClient, view: StreamView, **target: Any
) -> None:
    async def camera() -> AsyncIterator[ActorFrame]:
        started = time.monotonic()
        for index, frame in enumerate(frames):
            await asyncio.sleep(max(0.0, started + index / fps - time.monotonic()))
            view.sent.append(time.monotonic())
            yield ActorFrame(encode_jpeg(frame), capture_time_us=time.time_ns() // 1000)

    rigs: RigStream = client.animate(camera(), **target)
    if view.as_json:
        async for rig in rigs:
            print(json.dumps(view.received_frame(rig)), flush=True)
        return
    with Live(view, console=console, refresh_per_second=4):
        async for rig in rigs:
            view.received_frame(rig)


def _rate(times: deque[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


class StreamView:
    """What `freeavatar stream` shows while it plays: send and receive rates, latency, and each
    avatar's most active controls as bars (a rich renderable, redrawn by `Live`); or, with
    `--json`, one JSON object per rig frame."""

    def __init__(self, fps: float, specs: dict[str, RigSpec], as_json: bool = False) -> None:
        self.specs = specs  # avatar id -> rig spec, for the controls' ranges
        self.as_json = as_json
        self.sent: deque[float] = deque(maxlen=max(2, int(fps * 2)))
        self._window = self.sent.maxlen
        self.received: dict[str, deque[float]] = {}
        self.latency: deque[float] = deque(maxlen=300)
        self.latest: dict[str, RigFrame] = {}

    def note(self, message: str) -> None:
        """A line for the user: on stderr under --json, so stdout stays JSON lines."""
        (err_console if self.as_json else console).print(message)

    def received_frame(self, rig: RigFrame) -> dict[str, object]:
        """Count a rig frame in; returns its JSON record."""
        latency_ms = (time.time_ns() // 1000 - rig.capture_time_us) / 1000
        self.received.setdefault(rig.avatar_id, deque(maxlen=self._window)).append(time.monotonic())
        self.latency.append(latency_ms)
        self.latest[rig.avatar_id] = rig
        yaw, pitch, roll = rig.head_pose
        return {
            "avatar_id": rig.avatar_id,
            "avatar": self._name(rig),
            "sequence": rig.sequence,
            "capture_time_us": rig.capture_time_us,
            "latency_ms": round(latency_ms, 2),
            "face_present": rig.face_present,
            "confidence": round(rig.confidence, 4),
            "head_pose": {"yaw": round(yaw, 2), "pitch": round(pitch, 2), "roll": round(roll, 2)},
            "controls": dict(zip(self._control_names(rig), (round(v, 5) for v in rig.values.tolist()), strict=False)),
        }

    def _name(self, rig: RigFrame) -> str:
        if rig.controls is not None:
            return rig.controls.avatar_name
        spec = self.specs.get(rig.avatar_id)
        return spec.name if spec else rig.avatar_id

    def _control_names(self, rig: RigFrame) -> tuple[str, ...]:
        if rig.controls is not None:
            return rig.controls.control_names
        spec = self.specs.get(rig.avatar_id)
        return tuple(c.name for c in spec.controls) if spec else tuple(str(i) for i in range(len(rig.values)))

    def most_active(self, rig: RigFrame, count: int = TOP_CONTROLS) -> list[tuple[str, float, float]]:
        """The `count` controls furthest from their defaults, as a share of their range:
        (name, value, where the value sits in [min, max] from 0 to 1)."""
        spec = self.specs.get(rig.avatar_id)
        by_name = {c.name: c for c in spec.controls} if spec else {}
        rows = []
        for name, value in zip(self._control_names(rig), rig.values.tolist(), strict=False):
            control = by_name.get(name, RigControl(name))
            span = control.max - control.min or 1.0
            activity = abs(value - control.default) / span
            rows.append((activity, name, value, min(1.0, max(0.0, (value - control.min) / span))))
        rows.sort(key=lambda row: -row[0])
        return [(name, value, level) for _, name, value, level in rows[:count]]

    def __rich__(self) -> RenderableType:
        rates = Table("what", "rate (1/s)", "latency p50 ms", box=box.SIMPLE_HEAD)
        rates.add_row("frames sent", f"{_rate(self.sent):.1f}", "")
        p50 = f"{np.median(self.latency):.1f}" if self.latency else ""
        for avatar_id, times in self.received.items():
            rates.add_row(f"rig frames {self._name(self.latest[avatar_id])}", f"{_rate(times):.1f}", p50)
        controls = Table("avatar", "control", "", "value", box=box.SIMPLE_HEAD)
        for rig in self.latest.values():
            avatar = self._name(rig) if rig.face_present else f"{self._name(rig)} (no face)"
            for index, (name, value, level) in enumerate(self.most_active(rig)):
                controls.add_row(avatar if index == 0 else "", name, _bar(level), f"{value:+.2f}")
        return Group(rates, controls) if self.latest else rates


def _bar(level: float, width: int = BAR_WIDTH) -> Text:
    filled = round(level * width)
    return Text("█" * filled, style="cyan") + Text("░" * (width - filled), style="grey37")


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
    remote: Remote,
    outputs: OutputOptions | None = None,
    session_id: str = "",
    token: str = "",
    as_json: bool = False,
) -> None:
    """Play `video` as an actor's camera through the server at `remote`, showing the live view
    (or, `as_json`, printing one JSON line per rig frame) until the video ends."""
    outputs = outputs or OutputOptions()
    if any(p is OutputProtocol.VMC for p, _ in outputs.targets) and len(avatars) > 1:
        fail("--vmc drives one avatar (VMC has no subjects): give one --avatar", code=2)
    if outputs.subject and len(avatars) > 1:
        fail("--subject names one avatar's Live Link subject: give one --avatar", code=2)
    frames, native_fps = read_video(video)

    async def run() -> None:
        async with remote.async_client() as client:
            await _stream(frames, fps or native_fps, avatars, client, outputs, session_id, token, as_json)

    try:
        asyncio.run(run())
    except FreeAvatarError as error:
        fail(str(error))
