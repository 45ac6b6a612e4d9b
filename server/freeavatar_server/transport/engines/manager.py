"""The engine outputs of a server: each one a task that reads one avatar's frames from its
session and sends them over UDP to an engine (Live Link Face) or a VMC app.

What keeps a bad target from hurting anyone:
- An output is one more subscriber of its session, holding a single frame: the pipeline only
  ever offers it a frame (never waits), and a newer frame replaces one not yet sent.
- Sending never blocks: datagrams go through an asyncio datagram transport, and the network's
  refusals (nothing listening, ICMP unreachable) come back as counted errors, not exceptions.
- At most one send per source frame: after each send the output rests for most of a source
  frame interval, measured from the frames' capture times.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from dataclasses import dataclass
from typing import Protocol

from freeavatar._proto import rig_pb2, stream_pb2
from freeavatar.rig import RigSpec
from freeavatar_server.live.errors import Exhausted, Invalid, NotFound
from freeavatar_server.live.pipeline import PipelineStats
from freeavatar_server.live.sessions import Session, SessionRegistry
from freeavatar_server.live.subscriptions import RigSubscription, StreamClosed, StreamEnd
from freeavatar_server.transport.engines import livelink, vmc

log = logging.getLogger(__name__)

LIVE_LINK = stream_pb2.OUTPUT_PROTOCOL_LIVE_LINK_FACE
VMC = stream_pb2.OUTPUT_PROTOCOL_VMC
DEFAULT_PORTS = {LIVE_LINK: livelink.DEFAULT_PORT, VMC: vmc.DEFAULT_PORT}
MAX_OUTPUTS_PER_SESSION = 16
RESOLVE_TIMEOUT_S = 5.0
ACTOR_SILENCE_S = 1.0  # an output that follows whichever actor moves on after this much silence
# Rest after a send, as a share of the source's frame interval: under 1, so that a frame on
# time, give or take a quarter frame of jitter, is never held back; a burst goes out at no
# more than 4/3 of the source's rate, the newest frame after each rest.
REST_SHARE = 0.75
MAX_BUFFERED_BYTES = 64 * 1024  # a socket this far behind drops frames instead of queueing
MAX_SUBJECT_CHARS = 255  # Unreal reads at most 256 characters


class BadOutput(Invalid):
    """An output the server cannot send to; the message names the field."""


class OutputNotFound(NotFound):
    def __init__(self, session_id: str, output_id: str) -> None:
        super().__init__(f"session {session_id!r} has no output {output_id!r}")


class TooManyOutputs(Exhausted):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already has {MAX_OUTPUTS_PER_SESSION} outputs")


class Encoder(Protocol):
    def encode(self, frame: rig_pb2.RigFrame, fps: float) -> list[bytes]: ...


def make_encoder(wanted: stream_pb2.EngineOutput, spec: RigSpec) -> Encoder:
    """The protocol's encoder for this avatar; FAILED_PRECONDITION-style errors if the rig
    cannot be carried (no ARKit controls for Live Link)."""
    if wanted.protocol == LIVE_LINK:
        subject = wanted.subject_name or spec.name
        if len(subject) > MAX_SUBJECT_CHARS:
            raise BadOutput(f"subject_name is longer than {MAX_SUBJECT_CHARS} characters")
        return livelink.LiveLinkEncoder(spec, subject)
    if wanted.protocol == VMC:
        if wanted.vmc_blend_names not in stream_pb2.VmcBlendNames.values():
            raise BadOutput(f"vmc_blend_names {wanted.vmc_blend_names} is not a known name table")
        return vmc.VmcEncoder(vmc.BlendTable.of(spec, wanted.vmc_blend_names))
    raise BadOutput("protocol must be OUTPUT_PROTOCOL_LIVE_LINK_FACE or OUTPUT_PROTOCOL_VMC")


class SourceRate:
    """The source's frame rate, from the capture times of consecutive frames (a running
    average of their intervals; pauses and clock jumps are ignored)."""

    def __init__(self, fps: float = 30.0) -> None:
        self.interval_s = 1.0 / fps
        self._last_us = 0

    @property
    def fps(self) -> float:
        return 1.0 / self.interval_s

    def observe(self, frame: rig_pb2.RigFrame) -> None:
        stamp = frame.capture_time_us or frame.emit_time_us
        step_s = (stamp - self._last_us) / 1e6
        if self._last_us and 0 < step_s < 1.0:
            self.interval_s += 0.1 * (step_s - self.interval_s)
        self._last_us = stamp


class _Refusals(asyncio.DatagramProtocol):
    """The network's refusals of an output's datagrams, counted (UDP has no other feedback)."""

    def __init__(self, output: EngineOutput) -> None:
        self._output = output

    def error_received(self, exc: Exception) -> None:
        self._output.send_errors += 1
        self._output.last_error = str(exc)


class EngineOutput:
    """One running output: its settings, counters and the task that sends."""

    def __init__(self, settings: stream_pb2.EngineOutput, encoder: Encoder) -> None:
        self.settings = settings  # as asked, with the server's choices filled in
        self.encoder = encoder
        self.packets_sent = 0
        self.send_errors = 0
        self.last_error = ""
        self.rate = SourceRate()
        self.subscription: RigSubscription | None = None
        self.task: asyncio.Task[None] | None = None
        self._session: Session | None = None
        self._skipped = 0

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def frames_skipped(self) -> int:
        return self._skipped + (self.subscription.dropped if self.subscription else 0)

    def to_proto(self) -> stream_pb2.EngineOutput:
        message = stream_pb2.EngineOutput()
        message.CopyFrom(self.settings)
        message.packets_sent = self.packets_sent
        message.send_errors = self.send_errors
        message.last_error = self.last_error
        message.frames_skipped = self.frames_skipped
        return message

    def start(self, session: Session, transport: asyncio.DatagramTransport) -> asyncio.Task[None]:
        self._session = session
        self.subscription = session.subscribe(
            frozenset({self.settings.avatar_id}), capacity=1, actor_id=self.settings.actor_id
        )
        self.task = asyncio.create_task(self._run(transport), name=f"output-{self.id[:8]}")
        return self.task

    def close(self) -> None:
        """Stop at once: leave the session and cancel the task (await `task` to be sure)."""
        if self.subscription is not None and self._session is not None:
            self.subscription.close(StreamEnd(stream_pb2.STREAM_END_REASON_UNSPECIFIED, "the output was removed"))
            self._session.unsubscribe(self.subscription)
        if self.task is not None:
            self.task.cancel()

    async def _run(self, transport: asyncio.DatagramTransport) -> None:
        subscription = self.subscription
        assert subscription is not None
        fixed_actor = self.settings.actor_id
        try:
            while True:
                try:
                    async with asyncio.timeout(None if fixed_actor else ACTOR_SILENCE_S):
                        message = await subscription.next()
                except TimeoutError:  # the actor followed fell silent: take whoever comes next
                    subscription.actor_id = ""
                    continue
                if not message.HasField("frame"):
                    continue  # control names: the encoder has the rig already
                frame = message.frame
                if subscription.actor_id and frame.actor_id != subscription.actor_id:
                    self._skipped += 1  # offered before the output kept to one actor
                    continue
                # One actor's frames only (two faces on one avatar would flicker): from now on
                # the subscription lets only this actor's frames in, so others never displace them.
                subscription.actor_id = frame.actor_id
                self._send(frame, transport)
                await asyncio.sleep(REST_SHARE * self.rate.interval_s)
        except StreamClosed:  # the session closed, or the output was removed
            pass
        except Exception as error:  # a bug here must not pass silently, nor reach anyone else
            log.exception("engine output %s failed", self.id)
            self.last_error = f"internal error: {error}"
        finally:
            transport.close()

    def _send(self, frame: rig_pb2.RigFrame, transport: asyncio.DatagramTransport) -> None:
        self.rate.observe(frame)
        if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            self._skipped += 1
            return
        for datagram in self.encoder.encode(frame, self.rate.fps):
            transport.sendto(datagram)
        self.packets_sent += 1


@dataclass(frozen=True)
class Target:
    """Where an output's datagrams go, resolved."""

    family: int
    address: tuple[str, int]


async def resolve(host: str, port: int) -> Target:
    """The first UDP address of host:port; BadOutput naming the problem if there is none."""
    host = host.strip()
    if not host:
        raise BadOutput("host is empty")
    if not 0 < port <= 65535:
        raise BadOutput(f"port {port} is not in 1..65535")
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(
            loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT_S
        )
    except TimeoutError:
        raise BadOutput(f"host {host!r} did not resolve within {RESOLVE_TIMEOUT_S:.0f} s") from None
    except (socket.gaierror, UnicodeError) as error:
        raise BadOutput(f"cannot resolve host {host!r}: {error}") from None
    family, _, _, _, address = found[0]
    return Target(family, (address[0], address[1]))


class OutputManager:
    """Owns every engine output of a server: adds them to sessions, removes them, and ends them
    with their session, their avatar or the server."""

    def __init__(self, sessions: SessionRegistry, stats: PipelineStats) -> None:
        self._sessions = sessions
        self._stats = stats
        self._outputs: dict[str, EngineOutput] = {}

    async def add(self, wanted: stream_pb2.EngineOutput, token: str, spec: RigSpec) -> EngineOutput:
        """Start an output for `spec`'s avatar in its session; raises BadOutput, TooManyOutputs,
        or the session's and the encoder's own errors."""
        self._room_in(self._sessions.enter(wanted.session_id, token))
        encoder = make_encoder(wanted, spec)
        settings = stream_pb2.EngineOutput(
            id=uuid.uuid4().hex,
            session_id=wanted.session_id,
            avatar_id=wanted.avatar_id,
            protocol=wanted.protocol,
            host=wanted.host.strip(),
            port=wanted.port or DEFAULT_PORTS[wanted.protocol],
            actor_id=wanted.actor_id,
        )
        if isinstance(encoder, livelink.LiveLinkEncoder):
            settings.subject_name = encoder.subject
        if isinstance(encoder, vmc.VmcEncoder):
            settings.vmc_blend_names = encoder.table.names
        target = await resolve(settings.host, settings.port)
        output = EngineOutput(settings, encoder)
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Refusals(output), remote_addr=target.address, family=target.family
            )
        except OSError as error:
            raise BadOutput(f"cannot send to {settings.host}:{settings.port}: {error}") from None
        try:  # the session may have closed while the host resolved
            session = self._sessions.get(wanted.session_id)
            self._room_in(session)
        except Exception:
            transport.close()
            raise
        self._outputs[output.id] = output
        output.start(session, transport).add_done_callback(lambda _: self._retire(output))
        return output

    def remove(self, session_id: str, output_id: str) -> None:
        output = self._outputs.get(output_id)
        if output is None or output.settings.session_id != session_id:
            raise OutputNotFound(session_id, output_id)
        self._retire(output)

    def of_session(self, session_id: str) -> list[EngineOutput]:
        return [o for o in self._outputs.values() if o.settings.session_id == session_id]

    def avatar_deleted(self, avatar_id: str) -> None:
        for output in [o for o in self._outputs.values() if o.settings.avatar_id == avatar_id]:
            self._retire(output)

    async def stop(self) -> None:
        """End every output: cancel, then wait for their tasks."""
        outputs = list(self._outputs.values())
        for output in outputs:
            self._retire(output)
        await asyncio.gather(*(o.task for o in outputs if o.task), return_exceptions=True)

    def _retire(self, output: EngineOutput) -> None:
        """Idempotent: on removal, and when the task ends (as it does when its session closes)."""
        output.close()
        if self._outputs.pop(output.id, None) is not None and output.subscription is not None:
            self._stats.retired_subscriber_drops += output.subscription.dropped

    def _room_in(self, session: Session) -> None:
        if len(self.of_session(session.id)) >= MAX_OUTPUTS_PER_SESSION:
            raise TooManyOutputs(session.id)
