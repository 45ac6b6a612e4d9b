"""The live streams of one server: actors' inputs running through their pipelines, the
sessions they stream in, and the subscriptions that hear them. Every transport (gRPC, WebRTC,
the engine outputs) drives these through `LiveStreams`; none of it knows a transport."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from freeavatar._proto import stream_pb2
from freeavatar_server.inference.face.blink import BlinkCurve
from freeavatar_server.inference.face.jaw import JawLift
from freeavatar_server.live.analysis import AnalysisOptions
from freeavatar_server.live.errors import BadRequest, NotReady, require_id
from freeavatar_server.live.models import LiveModels
from freeavatar_server.live.pipeline import ActorPipeline, PipelineStats
from freeavatar_server.live.sessions import (
    Actor,
    BadBinding,
    Binding,
    Session,
    SessionNotFound,
    SessionRegistry,
)
from freeavatar_server.live.subscriptions import (
    RigSubscription,
    StreamEnd,
    actor_failed,
    actor_left,
    server_shutdown,
    session_closed,
)
from freeavatar_server.live.workers import AnalysisPool
from freeavatar_server.store import Store

SUBSCRIBER_BUFFER = 8  # frames per subscriber before the oldest go

log = logging.getLogger(__name__)


class ActorBusy(NotReady):
    def __init__(self, actor_id: str) -> None:
        super().__init__(f"actor {actor_id!r} is already streaming in another animate call")


@dataclass(frozen=True)
class AnimateTarget:
    """Whom an actor's input animates: an actor that joined a session (`session_id`,
    `actor_id`), or, with no session, a new private one bound to `avatar_ids` and closed with
    the stream."""

    session_id: str = ""
    session_token: str = ""
    actor_id: str = ""
    avatar_ids: tuple[str, ...] = ()


@dataclass(eq=False)
class ActorStream:
    """One actor's live input being animated, from an animate call or a WebRTC peer."""

    session: Session
    actor: Actor
    pipeline: ActorPipeline
    ended: asyncio.Future[StreamEnd]  # set to the reason when the stream ends, whoever ends it


class LiveStreams:
    """Owns the analysis workers and every actor stream; `close` ends them all."""

    def __init__(
        self, store: Store, models: LiveModels, sessions: SessionRegistry, workers: int = 2,
        face_rate_hz: float = 0.0, face_rate_floor_hz: float = 0.0, emotion_guard: bool = True,
        expression_floor: float = 1.0, blink_curve: bool = True, jaw_lift: bool = True,
    ) -> None:
        self.store = store
        self.models = models
        self.sessions = sessions
        self.stats = PipelineStats()
        options = AnalysisOptions(
            models.encoder_path, face_rate_hz=face_rate_hz, face_rate_floor_hz=face_rate_floor_hz,
            expression_floor=expression_floor, emotion_guard=emotion_guard,
            blink_curve=BlinkCurve() if blink_curve else None, jaw_lift=JawLift() if jaw_lift else None,
        )  # fmt: skip
        self._analysis = AnalysisPool(workers, options)  # processes, started on first use
        self._actor_streams: dict[str, ActorStream] = {}  # by actor id

    async def stop(self) -> None:
        """End every stream with a clear reason, then stop the analysis workers and the tasks
        that feed them."""
        self.sessions.close_all(server_shutdown())
        await self._analysis.stop()

    def avatar_deleted(self, avatar_id: str) -> None:
        """Unbind a deleted avatar everywhere; other avatars carry on."""
        self.models.forget(avatar_id)
        for session in self.sessions.sessions(include_private=True):
            for actor in session.actors.values():
                if avatar_id in actor.bindings:
                    actor.bindings = {k: v for k, v in actor.bindings.items() if k != avatar_id}
            for subscription in session.subscriptions:
                subscription.forget(avatar_id)

    # Actors and their bindings

    async def bindings(self, requests: Iterable[stream_pb2.AvatarBinding]) -> dict[str, Binding]:
        """Each requested binding checked against its avatar's rig, its animator loaded."""
        bindings: dict[str, Binding] = {}
        for request in requests:
            avatar_id = require_id(request.avatar_id, "binding avatar_id")
            if avatar_id in bindings:
                raise BadBinding(f"avatar {avatar_id!r} is bound twice")
            avatar = await asyncio.to_thread(self.store.get_avatar, avatar_id)
            binding = Binding.resolve(request, avatar.spec)
            if binding.uses_animator:
                await self.models.ensure(avatar_id)
            elif binding.wants_animator and self.models.animator_ref(avatar_id) is None:
                # loaded if the avatar has one; without it the avatar streams all the same
                try:
                    await self.models.refresh(avatar_id)
                except Exception as error:  # an optional model: log it, never fail the binding
                    log.warning("avatar %s streams without its animator: %s", avatar_id, error)
            bindings[avatar_id] = binding
        return bindings

    # Sessions: in a cluster, one created on another server is fetched the first time it is asked for

    async def create_session(self, name: str, caller: str = "") -> Session:
        session = self.sessions.create(name, caller=caller)
        if session.link is not None:
            await session.link.saved(session)
        return session

    async def find(self, session_id: str, actor_id: str = "") -> Session:
        """The session (SessionNotFound if none), with `actor_id` in it if the cluster has it."""
        require_id(session_id, "session_id")
        link = self.sessions.link
        if link is not None:
            session = self.sessions.local(session_id)
            if session is None or (actor_id and actor_id not in session.actors):
                await link.fetch(session_id)
        return self.sessions.get(session_id)

    async def enter(self, session_id: str, token: str, actor_id: str = "") -> Session:
        """The session, for a caller that must show its token (`SessionRegistry.enter`)."""
        await self.find(session_id, actor_id)
        return self.sessions.enter(session_id, token)

    async def join(self, session_id: str, token: str, actor_name: str, requests: Iterable[stream_pb2.AvatarBinding]) -> Actor:
        session = await self.enter(session_id, token)
        actor = session.join(actor_name, await self.bindings(requests))
        if session.link is not None:
            await session.link.saved(session, actor)
        return actor

    async def rebind(
        self, session_id: str, token: str, actor_id: str, requests: Iterable[stream_pb2.AvatarBinding]
    ) -> Actor:
        session = await self.enter(session_id, token, actor_id)
        actor = session.actor(actor_id)
        actor.bindings = await self.bindings(requests)  # the pipeline reads it per frame
        if session.link is not None:
            await session.link.saved(session, actor)
        return actor

    async def leave(self, session_id: str, token: str, actor_id: str) -> None:
        (await self.enter(session_id, token, actor_id)).leave(actor_id)
        self.actor_gone(actor_id)

    def actor_gone(self, actor_id: str, end: StreamEnd | None = None) -> None:
        """The actor left (here or on another server): its stream here, if any, ends."""
        stream = self._actor_streams.get(actor_id)
        if stream is not None:
            self.end_actor(stream, end or actor_left())

    # Actor streams: an actor's live input (an animate call or a WebRTC peer) and its pipeline

    async def warm_up(self) -> None:
        """Start the analysis workers (they load the models a stream needs); EncoderMissing
        without an encoder."""
        self.models.check_encoder()
        await self._analysis.start()

    async def animate_target(self, target: AnimateTarget) -> tuple[Session, str]:
        """The session and actor an input animates (a private session made for it if need be)."""
        if target.session_id:
            session = await self.enter(target.session_id, target.session_token, target.actor_id)
            return session, session.actor(require_id(target.actor_id, "actor_id")).id
        if not target.avatar_ids:
            raise BadRequest("an actor stream needs a session_id and actor_id, or avatar_ids")
        bindings = await self.bindings(stream_pb2.AvatarBinding(avatar_id=a) for a in target.avatar_ids)
        session = self.sessions.create("animate", private=True)
        return session, session.join("actor", bindings).id

    def start_actor(self, session: Session, actor: Actor) -> ActorStream:
        """Run the actor's pipeline until `end_actor`; one stream per actor at a time."""
        if actor.streaming:
            raise ActorBusy(actor.id)
        pipeline = ActorPipeline(session, actor, self.models, self.stats, self._analysis)
        stream = ActorStream(session, actor, pipeline, asyncio.get_running_loop().create_future())
        pipeline.failed.add_done_callback(lambda failed: self.end_actor(stream, actor_failed(str(failed.exception()))))
        actor.streaming = True
        self._actor_streams[actor.id] = stream
        pipeline.start()
        return stream

    def end_actor(self, stream: ActorStream, end: StreamEnd) -> None:
        """Idempotent: stop the pipeline (await `stream.pipeline.stop()` to be sure it is done),
        tell the stream's owner why through `stream.ended`, close a private session."""
        if self._actor_streams.get(stream.actor.id) is not stream:
            return
        del self._actor_streams[stream.actor.id]
        stream.pipeline.cancel()
        stream.actor.streaming = False
        stream.ended.set_result(end)
        if stream.session.private:
            with contextlib.suppress(SessionNotFound):  # the server may have closed it
                self.sessions.close(stream.session.id, session_closed(f"the actor's stream ended: {end}"))

    # Subscriptions

    def subscribe(
        self,
        session: Session,
        avatar_ids: frozenset[str] = frozenset(),
        actor_id: str = "",
        batched: bool = False,
        own_stream: bool = False,
    ) -> RigSubscription:
        """A subscription to the session's rig frames (release it with `retire`); `own_stream`
        for the stream that feeds `actor_id` (`Session.subscribe`)."""
        return session.subscribe(avatar_ids, SUBSCRIBER_BUFFER, actor_id=actor_id, batched=batched, own_stream=own_stream)

    def retire(self, session: Session, subscription: RigSubscription) -> None:
        """Idempotent: unsubscribe, keeping the subscription's drop count in the stats."""
        if subscription in session.subscriptions:
            session.unsubscribe(subscription)
            self.stats.retired_subscriber_drops += subscription.dropped

    def snapshot(self) -> stream_pb2.PipelineStats:
        """Per-stage timings and counters now; call on the event loop, which owns them."""
        sessions = self.sessions.sessions(include_private=True)
        link = self.sessions.link
        return stream_pb2.PipelineStats(
            stages=[stats.to_proto(name) for name, stats in self.stats.stages.items()]
            + ([link.stage()] if link is not None else []),
            frames_in=self.stats.frames_in,
            frames_out=self.stats.frames_out,
            subscriber_drops=self.stats.retired_subscriber_drops
            + sum(s.subscriber_drops() for s in sessions),
            active_sessions=len(sessions),
            active_actors=sum(len(s.actors) for s in sessions),
        )
