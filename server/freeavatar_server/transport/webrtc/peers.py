"""The server's WebRTC peers: actors sending video (WHIP) and subscribers receiving rig frames
(WHEP-like), in the same sessions and pipelines as the gRPC streams.

A publisher is an actor stream (LiveStreams.start_actor) fed by the peer's video track, with
the actor's own rig frames going back over the peer's data channel when it opened one (a
browser does, OBS does not). A subscriber is a session subscription forwarded over the peer's
data channel. Either ends on DELETE, when its rig stream ends (session closed, actor left, a
frame that cannot be read), when the connection fails, or when nothing has been heard from
the peer for `timeout_s`; ending releases everything it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import CODECS
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import MediaDescription, SessionDescription

from freeavatar._proto import stream_pb2
from freeavatar_server.live.caps import Tally
from freeavatar_server.live.errors import BadRequest, Invalid, NotFound
from freeavatar_server.live.sessions import ActorNotFound, Session, SessionNotFound
from freeavatar_server.live.streams import ActorStream, AnimateTarget, LiveStreams
from freeavatar_server.live.subscriptions import input_ended, session_closed
from freeavatar_server.store import AvatarNotFound
from freeavatar_server.transport.webrtc.ice import LastHeard, gather_on, peer_connection
from freeavatar_server.transport.webrtc.rig_channel import LABEL, RigChannel
from freeavatar_server.transport.webrtc.video import SUPPORTED_CODECS, IncomingVideo, attach

log = logging.getLogger(__name__)


class BadOffer(Invalid):
    """An SDP offer the server cannot answer; the message says what is wrong with it."""


class PeerNotFound(NotFound):
    def __init__(self, peer_id: str) -> None:
        super().__init__(f"no WebRTC peer {peer_id!r} (it ended, or never was)")


class UnknownAvatar(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no avatar with id or name {ref!r}")




@dataclass(frozen=True)
class PublishTarget:
    """Whom a WHIP peer's video animates: an actor that joined over gRPC (`actor_id`), a new
    actor in a session bound to `avatars`, or with no session a private one (closed with the
    peer), as AnimateStart has it."""

    session_id: str = ""
    token: str = ""
    actor_id: str = ""
    avatars: tuple[str, ...] = ()  # avatar ids or names
    actor_name: str = "actor"


class Peer:
    """One peer connection and what it holds; `close` lets all of it go."""

    def __init__(
        self,
        kind: str,
        pc: RTCPeerConnection,
        channel: RigChannel,
        held: contextlib.AsyncExitStack,
        timeout_s: float,
    ) -> None:
        self.id = secrets.token_urlsafe(16)  # unguessable: its URL is all a DELETE needs without keys
        self.kind = kind  # "whip" or "whep"
        self.pc = pc
        self.channel = channel
        self.video: IncomingVideo | None = None
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._held = held  # everything the peer holds, its connection included
        self._timeout_s = timeout_s
        self._heard = LastHeard(pc)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: asyncio.Task[None] | None = None
        pc.on("datachannel", self._datachannel)
        pc.on("connectionstatechange", self._connection_state)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._forward(), name=f"{self.kind}-rigs-{self.id[:6]}"),
            asyncio.create_task(self._watch(), name=f"{self.kind}-watch-{self.id[:6]}"),
        ]

    async def close(self, reason: str) -> None:
        """Idempotent; returns once everything is released."""
        self.close_soon(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    def close_soon(self, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(reason), name=f"{self.kind}-close-{self.id[:6]}")

    async def _close(self, reason: str) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._held.aclose()
        finally:
            log.info("WebRTC %s peer %s ended: %s", self.kind, self.id, reason)
            self.closed.set_result(reason)

    def fail(self, error: BaseException) -> None:
        """Something of ours broke while serving this peer: say what, and end it (aiortc would
        log a warning and let the media silently stop)."""
        log.error("WebRTC %s peer %s failed", self.kind, self.id, exc_info=error)
        self.close_soon(f"internal error: {error!r}")

    async def _forward(self) -> None:
        try:
            self.close_soon(await self.channel.run())
        except Exception as error:
            self.fail(error)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._timeout_s / 4))
            if self._heard.silent_for() > self._timeout_s:
                self.close_soon(f"nothing heard from the peer for {self._timeout_s:g} s")
                return

    def _datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == LABEL:
            self.channel.use(channel)

    def _connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.close_soon(f"the connection {self.pc.connectionState}")


class WebRtcService:
    """Every WebRTC peer of one server; `close` ends them all."""

    def __init__(
        self,
        live: LiveStreams,
        ice_hosts: tuple[str, ...] | None,
        timeout_s: float,
        tally: Tally | None = None,
    ) -> None:
        self._live = live
        self._tally = tally or Tally("WebRTC peers", 0, "--max-peers-per-key")  # peers per caller
        self._sessions = live.sessions
        self._store = live.store
        self._ice_hosts = ice_hosts
        self._timeout_s = timeout_s
        self.peers: dict[str, Peer] = {}

    async def publish(self, offer: str, target: PublishTarget, caller: str = "") -> tuple[Peer, str]:
        """Answer a WHIP offer: returns the peer and the SDP answer. The peer counts against
        `caller`'s cap until it ends."""
        video = offered_video(parse_offer(offer))
        await self._live.warm_up()
        async with contextlib.AsyncExitStack() as held:  # released in reverse if anything fails
            held.callback(self._tally.take(caller))  # first: a refused offer costs nothing more
            pc = peer_connection()
            held.push_async_callback(pc.close)
            await _set_offer(pc, offer)
            receiving = next(t for t in pc.getTransceivers() if t.mid == video.rtp.muxId)
            for transceiver in pc.getTransceivers():
                if transceiver is not receiving:  # audio, and any second camera: not ours
                    transceiver.direction = "inactive"
            session, actor_id, joined = await self._actor_for(target)
            held.callback(self._leave if joined else self._close_if_private, session, actor_id)
            actor_stream = self._live.start_actor(session, session.actor(actor_id))
            held.push_async_callback(self._end_actor, actor_stream)
            rigs = self._live.subscribe(session, actor_id=actor_id, own_stream=True)
            held.callback(self._live.retire, session, rigs)
            actor_stream.ended.add_done_callback(lambda ended: rigs.close(ended.result()))
            answer = await _answer(pc, self._ice_hosts)
            codecs = answered_codecs(answer, receiving.mid)
            incoming = IncomingVideo(codecs, actor_stream.pipeline.submit, self._live.stats.stages["decode"])
            peer = Peer("whip", pc, RigChannel(rigs), held.pop_all(), self._timeout_s)
        peer.video = incoming
        attach(receiving.receiver, incoming, peer.fail)
        return self._add(peer), answer

    async def subscribe(
        self, offer: str, session_id: str, token: str, avatars: tuple[str, ...], caller: str = ""
    ) -> tuple[Peer, str]:
        """Answer a subscriber's offer (a data channel, no media to send): returns the peer
        and the SDP answer. The peer counts against `caller`'s cap until it ends."""
        description = parse_offer(offer)
        if not any(m.kind == "application" for m in description.media):
            raise BadOffer(f"the offer has no data channel (m=application) to carry rig frames; open one labelled {LABEL!r}")
        session = await self._live.enter(session_id, token)
        avatar_ids = frozenset([await self._avatar_id(a) for a in avatars])
        async with contextlib.AsyncExitStack() as held:
            held.callback(self._tally.take(caller))
            pc = peer_connection()
            held.push_async_callback(pc.close)
            await _set_offer(pc, offer)
            for transceiver in pc.getTransceivers():
                transceiver.direction = "inactive"  # rig frames only: no media either way
            answer = await _answer(pc, self._ice_hosts)
            rigs = self._live.subscribe(session, avatar_ids)
            held.callback(self._live.retire, session, rigs)
            peer = Peer("whep", pc, RigChannel(rigs), held.pop_all(), self._timeout_s)
        return self._add(peer), answer

    def get(self, peer_id: str) -> Peer:
        try:
            return self.peers[peer_id]
        except KeyError:
            raise PeerNotFound(peer_id) from None

    async def close(self, reason: str = "the server is shutting down") -> None:
        await asyncio.gather(*(peer.close(reason) for peer in list(self.peers.values())))

    def _add(self, peer: Peer) -> Peer:
        self.peers[peer.id] = peer
        peer.closed.add_done_callback(lambda _: self.peers.pop(peer.id, None))
        peer.start()
        return peer

    async def _actor_for(self, target: PublishTarget) -> tuple[Session, str, bool]:
        """(session, actor id, whether the actor joined for this peer and leaves with it)."""
        avatar_ids = [await self._avatar_id(a) for a in target.avatars]
        if not target.actor_id and not avatar_ids:
            raise BadRequest("name the avatars this actor drives: ?avatar=ID_OR_NAME (repeatable)")
        if not target.session_id or target.actor_id:
            wanted = AnimateTarget(target.session_id, target.token, target.actor_id, tuple(avatar_ids))
            session, actor_id = await self._live.animate_target(wanted)
            return session, actor_id, False
        session = await self._live.enter(target.session_id, target.token)
        actor = await self._live.join(target.session_id, target.token, target.actor_name, [stream_pb2.AvatarBinding(avatar_id=a) for a in avatar_ids])
        return session, actor.id, True

    async def _end_actor(self, stream: ActorStream) -> None:
        self._live.end_actor(stream, input_ended("its WebRTC peer ended"))
        await stream.pipeline.stop()
        if stream.pipeline.failed.done():
            log.warning("WebRTC actor %s: %s", stream.actor.id, stream.pipeline.failed.exception())

    def _leave(self, session: Session, actor_id: str) -> None:
        with contextlib.suppress(SessionNotFound, ActorNotFound):  # closed or left meanwhile
            self._sessions.get(session.id).leave(actor_id)

    def _close_if_private(self, session: Session, actor_id: str) -> None:
        if session.private:
            with contextlib.suppress(SessionNotFound):  # ending its actor stream closes it too
                self._sessions.close(session.id, session_closed("its WebRTC peer ended"))

    async def _avatar_id(self, ref: str) -> str:
        def find() -> str:
            with contextlib.suppress(AvatarNotFound):
                return self._store.get_avatar(ref).id
            after = 0
            while batch := self._store.list_avatars(after, 256):
                for record in batch:
                    if record.spec.name == ref:
                        return record.id
                after = batch[-1].seq
            raise UnknownAvatar(ref)

        return await asyncio.to_thread(find)


def parse_offer(offer: str) -> SessionDescription:
    if not offer.strip():
        raise BadOffer("the request body is empty: POST an SDP offer")
    try:
        description = SessionDescription.parse(offer)
    except Exception as error:  # aiortc's parser raises whatever the line it chokes on gives
        raise BadOffer(f"the offer is not valid SDP: {str(error) or type(error).__name__}") from None
    if not description.media:
        raise BadOffer("the offer is not valid SDP: it has no media sections (m= lines)")
    return description


def offered_video(description: SessionDescription) -> MediaDescription:
    """The first video section, if it can be decoded here."""
    videos = [m for m in description.media if m.kind == "video" and m.direction in ("sendonly", "sendrecv", None)]
    if not videos:
        raise BadOffer("the offer sends no video (an m=video section, sendonly or sendrecv)")
    video = videos[0]
    if not find_common_codecs(CODECS["video"], video.rtp.codecs):
        offered = sorted({_codec_name(c) for c in video.rtp.codecs if c.name.lower() not in ("rtx", "red", "ulpfec")})
        raise BadOffer(
            f"unsupported video codec: the offer has {', '.join(offered) or 'none'}; "
            f"this server decodes {' and '.join(SUPPORTED_CODECS)} (H264 in constrained baseline, packetization-mode 1)"
        )
    return video


def answered_codecs(answer: str, mid: str | None) -> dict[int, RTCRtpCodecParameters]:
    media = next(m for m in SessionDescription.parse(answer).media if m.rtp.muxId == mid)
    return {c.payloadType: c for c in media.rtp.codecs if c.name in SUPPORTED_CODECS}


async def _set_offer(pc: RTCPeerConnection, offer: str) -> None:
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    except (ValueError, LookupError, InvalidAccessError, InvalidStateError, OperationError) as error:
        raise BadOffer(f"the offer cannot be answered: {str(error) or type(error).__name__}") from None


async def _answer(pc: RTCPeerConnection, hosts: tuple[str, ...] | None) -> str:
    gather_on(pc, hosts)
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp


def _codec_name(codec: object) -> str:
    name = getattr(codec, "name", "?")
    profile = getattr(codec, "parameters", {}).get("profile-level-id")
    return f"{name} (profile-level-id {profile})" if profile else name
