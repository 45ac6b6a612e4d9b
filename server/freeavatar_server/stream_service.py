"""StreamService: sessions, actors and their avatar bindings, and the animate and subscribe
streams over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from freeavatar._proto import rig_pb2, stream_pb2, stream_pb2_grpc
from freeavatar_server.analysis import AnalysisFailed, AnalysisPool, WorkerLost
from freeavatar_server.errors import (
    BadRequest,
    grpc_errors,
    grpc_stream_errors,
    register_status,
    require_id,
)
from freeavatar_server.live_models import AnimatorMissing, EncoderMissing, LiveModels
from freeavatar_server.outputs import (
    BadOutput,
    NoArkitControls,
    NoArkitForVmc,
    OutputManager,
    OutputNotFound,
    TooManyOutputs,
)
from freeavatar_server.pipeline import ActorPipeline, BadFrame, PipelineStats
from freeavatar_server.rig_stream import RigSubscription
from freeavatar_server.sessions import (
    Actor,
    ActorNotFound,
    BadBinding,
    BadSessionToken,
    Binding,
    Session,
    SessionNotFound,
    SessionRegistry,
)
from freeavatar_server.store import Store

for _error, _code in (
    (SessionNotFound, grpc.StatusCode.NOT_FOUND),
    (ActorNotFound, grpc.StatusCode.NOT_FOUND),
    (BadSessionToken, grpc.StatusCode.PERMISSION_DENIED),
    (BadBinding, grpc.StatusCode.INVALID_ARGUMENT),
    (BadFrame, grpc.StatusCode.INVALID_ARGUMENT),
    (AnalysisFailed, grpc.StatusCode.INTERNAL),
    (WorkerLost, grpc.StatusCode.UNAVAILABLE),
    (AnimatorMissing, grpc.StatusCode.FAILED_PRECONDITION),
    (EncoderMissing, grpc.StatusCode.FAILED_PRECONDITION),
    (BadOutput, grpc.StatusCode.INVALID_ARGUMENT),
    (NoArkitControls, grpc.StatusCode.FAILED_PRECONDITION),
    (NoArkitForVmc, grpc.StatusCode.FAILED_PRECONDITION),
    (OutputNotFound, grpc.StatusCode.NOT_FOUND),
    (TooManyOutputs, grpc.StatusCode.RESOURCE_EXHAUSTED),
):
    register_status(_error, _code)


class ActorBusy(Exception):
    def __init__(self, actor_id: str) -> None:
        super().__init__(f"actor {actor_id!r} is already streaming in another animate call")


register_status(ActorBusy, grpc.StatusCode.FAILED_PRECONDITION)

SUBSCRIBER_BUFFER = 8  # frames per subscriber before the oldest go


@dataclass(eq=False)
class ActorStream:
    """One actor's live input being animated, from an animate call or a WebRTC peer."""

    session: Session
    actor: Actor
    pipeline: ActorPipeline
    ended: asyncio.Future[str]  # set to the reason when the stream ends, whoever ends it


class StreamService(stream_pb2_grpc.StreamServiceServicer):
    def __init__(self, store: Store, models: LiveModels, sessions: SessionRegistry, workers: int = 2) -> None:
        self._store = store
        self._models = models
        self._sessions = sessions
        self.stats = PipelineStats()
        self._analysis = AnalysisPool(workers, models.encoder_path)  # processes, started on first use
        self._actor_streams: dict[str, ActorStream] = {}  # by actor id
        self._outputs = OutputManager(sessions, self.stats)

    async def close(self) -> None:
        await self._outputs.stop()
        self._sessions.close_all("the server is shutting down")
        self._analysis.close()

    async def avatar_deleted(self, avatar_id: str) -> None:
        """Unbind a deleted avatar everywhere; its streams and outputs end, other avatars carry on."""
        self._models.forget(avatar_id)
        self._outputs.avatar_deleted(avatar_id)
        for session in self._sessions.sessions(include_private=True):
            for actor in session.actors.values():
                if avatar_id in actor.bindings:
                    actor.bindings = {k: v for k, v in actor.bindings.items() if k != avatar_id}
            for subscription in session.subscriptions:
                subscription.forget(avatar_id)

    # Sessions and actors

    @grpc_errors
    async def CreateSession(self, request: stream_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.Session:
        return self._sessions.create(request.name).to_proto(with_token=True)

    @grpc_errors
    async def GetSession(self, request: stream_pb2.GetSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.Session:
        return self._session_message(self._sessions.get(require_id(request.session_id, "session_id")))

    @grpc_errors
    async def ListSessions(self, request: stream_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext) -> stream_pb2.ListSessionsResponse:
        return stream_pb2.ListSessionsResponse(sessions=[self._session_message(s) for s in self._sessions.sessions()])

    def _session_message(self, session: Session) -> stream_pb2.Session:
        message = session.to_proto()
        message.outputs.extend(o.to_proto() for o in self._outputs.of_session(session.id))
        return message

    @grpc_errors
    async def CloseSession(self, request: stream_pb2.CloseSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.CloseSessionResponse:
        self._sessions.close(require_id(request.session_id, "session_id"))
        return stream_pb2.CloseSessionResponse()

    @grpc_errors
    async def JoinSession(self, request: stream_pb2.JoinSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.Actor:
        session = self._sessions.enter(require_id(request.session_id, "session_id"), request.session_token)
        bindings = await self.bindings(request.bindings)
        return session.join(request.actor_name, bindings).to_proto()

    @grpc_errors
    async def RebindActor(self, request: stream_pb2.RebindActorRequest, context: grpc.aio.ServicerContext) -> stream_pb2.Actor:
        actor = self._sessions.get(require_id(request.session_id, "session_id")).actor(request.actor_id)
        actor.bindings = await self.bindings(request.bindings)  # the pipeline reads it per frame
        return actor.to_proto()

    @grpc_errors
    async def LeaveSession(self, request: stream_pb2.LeaveSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.LeaveSessionResponse:
        self._sessions.get(require_id(request.session_id, "session_id")).leave(request.actor_id)
        stream = self._actor_streams.get(request.actor_id)
        if stream is not None:
            self.end_actor(stream, "the actor left the session")
        return stream_pb2.LeaveSessionResponse()

    async def bindings(self, messages: list[stream_pb2.AvatarBinding]) -> dict[str, Binding]:
        bindings: dict[str, Binding] = {}
        for message in messages:
            avatar_id = require_id(message.avatar_id, "binding avatar_id")
            if avatar_id in bindings:
                raise BadBinding(f"avatar {avatar_id!r} is bound twice")
            avatar = await asyncio.to_thread(self._store.get_avatar, avatar_id)
            await self._models.ensure(avatar_id)
            bindings[avatar_id] = Binding.resolve(message, avatar.spec)
        return bindings

    # Actor streams: an actor's live input (an animate call or a WebRTC peer) and its pipeline

    async def warm_up(self) -> None:
        """Start the analysis workers (they load the models a stream needs); FAILED_PRECONDITION
        (EncoderMissing) without an encoder."""
        self._models.check_encoder()
        await self._analysis.start()

    def start_actor(self, session: Session, actor: Actor) -> ActorStream:
        """Run the actor's pipeline until `end_actor`; one stream per actor at a time."""
        if actor.streaming:
            raise ActorBusy(actor.id)
        pipeline = ActorPipeline(session, actor, self._models, self.stats, self._analysis)
        stream = ActorStream(session, actor, pipeline, asyncio.get_running_loop().create_future())
        pipeline.failed.add_done_callback(lambda failed: self.end_actor(stream, str(failed.exception())))
        actor.streaming = True
        self._actor_streams[actor.id] = stream
        pipeline.start()
        return stream

    def end_actor(self, stream: ActorStream, reason: str) -> None:
        """Idempotent: stop the pipeline (await `stream.pipeline.stop()` to be sure it is done),
        tell the stream's owner why through `stream.ended`, close a private session."""
        if self._actor_streams.get(stream.actor.id) is not stream:
            return
        del self._actor_streams[stream.actor.id]
        stream.pipeline.cancel()
        stream.actor.streaming = False
        stream.ended.set_result(reason)
        if stream.session.private:
            with contextlib.suppress(SessionNotFound):  # the server may have closed it
                self._sessions.close(stream.session.id, f"the actor's stream ended: {reason}")

    def retire(self, session: Session, subscription: RigSubscription) -> None:
        """Idempotent: unsubscribe, keeping the subscription's drop count in the stats."""
        if subscription in session.subscriptions:
            session.unsubscribe(subscription)
            self.stats.retired_subscriber_drops += subscription.dropped

    # Streams

    @grpc_stream_errors
    async def Animate(
        self, requests: AsyncIterator[stream_pb2.AnimateRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rig_pb2.RigStreamMessage]:
        incoming = aiter(requests)
        first = await anext(incoming, None)
        if first is None or first.WhichOneof("kind") != "start":
            raise BadRequest("an animate call must open with AnimateStart")
        await self.warm_up()
        session, actor_id = await self.animate_target(first.start)
        actor_stream = self.start_actor(session, session.actor(actor_id))
        pipeline = actor_stream.pipeline
        stream = session.subscribe(capacity=SUBSCRIBER_BUFFER, actor_id=actor_id, batched=first.start.batch_frames)
        actor_stream.ended.add_done_callback(lambda ended: stream.close(ended.result()))
        reader = asyncio.create_task(self._feed(incoming, pipeline, stream), name=f"feed-{actor_id[:8]}")

        def release(_: object = None) -> None:
            """Idempotent. Runs when the generator ends and when the RPC does: a client that
            vanishes may leave this generator suspended until it is garbage-collected."""
            reader.cancel()
            self.retire(session, stream)
            self.end_actor(actor_stream, "the animate call ended")

        context.add_done_callback(release)
        try:
            async for message in stream:
                yield message
            if pipeline.failed.done():
                pipeline.failed.result()  # raises the BadFrame or AnalysisFailed
            if reader.done():
                reader.result()  # raises what the reader met
        finally:
            release()
            await asyncio.gather(reader, pipeline.task, return_exceptions=True)

    async def animate_target(self, start: stream_pb2.AnimateStart) -> tuple[Session, str]:
        if start.session_id:
            session = self._sessions.enter(start.session_id, start.session_token)
            return session, session.actor(require_id(start.actor_id, "actor_id")).id
        if not start.avatar_ids:
            raise BadRequest("AnimateStart needs a session_id and actor_id, or avatar_ids")
        bindings = await self.bindings([stream_pb2.AvatarBinding(avatar_id=a) for a in start.avatar_ids])
        session = self._sessions.create("animate", private=True)
        return session, session.join("actor", bindings).id

    async def _feed(
        self, incoming: AsyncIterator[stream_pb2.AnimateRequest], pipeline: ActorPipeline, stream: RigSubscription
    ) -> None:
        """Hand the actor's frames to the pipeline; at the end of input, let it finish and end
        the response stream."""
        try:
            async for request in incoming:
                kind = request.WhichOneof("kind")
                if kind == "frame":
                    pipeline.submit(request.frame)
                elif kind == "calibrate_neutral":
                    pipeline.calibrate()
                else:
                    raise BadRequest("AnimateStart may only open an animate call")
            await pipeline.flush()
            stream.close("the actor's input ended")
        except BaseException:
            stream.close("the animate call failed")
            raise

    @grpc_stream_errors
    async def Subscribe(
        self, request: stream_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rig_pb2.RigStreamMessage]:
        session = self._sessions.enter(require_id(request.session_id, "session_id"), request.session_token)
        stream = session.subscribe(frozenset(request.avatar_ids), SUBSCRIBER_BUFFER, batched=request.batch_frames)

        context.add_done_callback(lambda _: self.retire(session, stream))  # see Animate's release
        try:
            # Headers now, not with the first frame: a client learns at once that it is
            # subscribed (engines show it), even while the session has no frames to send.
            await context.send_initial_metadata(())
            async for message in stream:
                yield message
        finally:
            self.retire(session, stream)

    # Engine outputs

    @grpc_errors
    async def AddOutput(self, request: stream_pb2.AddOutputRequest, context: grpc.aio.ServicerContext) -> stream_pb2.EngineOutput:
        wanted = request.output
        session = self._sessions.enter(require_id(wanted.session_id, "session_id"), request.session_token)
        avatar = await asyncio.to_thread(self._store.get_avatar, require_id(wanted.avatar_id, "avatar_id"))
        if wanted.actor_id:
            session.actor(wanted.actor_id)  # NOT_FOUND unless the actor joined
        output = await self._outputs.add(wanted, request.session_token, avatar.spec)
        return output.to_proto()

    @grpc_errors
    async def RemoveOutput(self, request: stream_pb2.RemoveOutputRequest, context: grpc.aio.ServicerContext) -> stream_pb2.RemoveOutputResponse:
        session = self._sessions.get(require_id(request.session_id, "session_id"))
        self._outputs.remove(session.id, require_id(request.output_id, "output_id"))
        return stream_pb2.RemoveOutputResponse()

    @grpc_errors
    async def GetStats(self, request: stream_pb2.GetStatsRequest, context: grpc.aio.ServicerContext) -> stream_pb2.PipelineStats:
        return self.snapshot()

    def snapshot(self) -> stream_pb2.PipelineStats:
        """Per-stage timings and counters now; call on the event loop, which owns them."""
        sessions = self._sessions.sessions(include_private=True)
        return stream_pb2.PipelineStats(
            stages=[stats.to_proto(name) for name, stats in self.stats.stages.items()],
            frames_in=self.stats.frames_in,
            frames_out=self.stats.frames_out,
            subscriber_drops=self.stats.retired_subscriber_drops
            + sum(s.subscriber_drops() for s in sessions),
            active_sessions=len(sessions),
            active_actors=sum(len(s.actors) for s in sessions),
        )
