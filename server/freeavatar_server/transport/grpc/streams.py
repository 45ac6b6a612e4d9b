"""StreamService over gRPC: sessions, actors and their bindings, the animate and subscribe
streams, and the engine outputs. Thin: each handler turns messages into calls on
`live.LiveStreams` (and the engine outputs' manager) and back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from freeavatar._proto import rig_pb2, stream_pb2, stream_pb2_grpc
from freeavatar_server.live.caps import Tally
from freeavatar_server.live.errors import BadRequest, require_id
from freeavatar_server.live.pipeline import ActorPipeline
from freeavatar_server.live.sessions import Session
from freeavatar_server.live.streams import AnimateTarget, LiveStreams
from freeavatar_server.live.subscriptions import RigSubscription, actor_failed, input_ended
from freeavatar_server.transport.auth import Callers
from freeavatar_server.transport.engines import OutputManager
from freeavatar_server.transport.grpc.avatars import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_position
from freeavatar_server.transport.grpc.status import end_stream, grpc_errors, grpc_stream_errors
from freeavatar_server.transport.limits import byte_bounded


class StreamService(stream_pb2_grpc.StreamServiceServicer):
    def __init__(
        self, live: LiveStreams, outputs: OutputManager, callers: Callers | None = None, streams: Tally | None = None
    ) -> None:
        self._live = live
        self._sessions = live.sessions
        self._outputs = outputs
        self._callers = callers or Callers(keyed=False)
        self._streams = streams or Tally("streams", 0, "--max-streams-per-key")  # Animate and Subscribe calls

    # Sessions and actors

    @grpc_errors
    async def CreateSession(self, request: stream_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.Session:
        session = await self._live.create_session(request.name, caller=self._callers.of_grpc(context))
        return session.to_proto(with_token=True)

    @grpc_errors
    async def GetSession(self, request: stream_pb2.GetSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.Session:
        return self._session_message(await self._live.find(request.session_id))

    @grpc_errors
    async def ListSessions(self, request: stream_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext) -> stream_pb2.ListSessionsResponse:
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        sessions = self._sessions.sessions(after=page_position(request.page_token))
        page, more = byte_bounded(((s.seq, self._session_message(s)) for s in sessions), limit)
        return stream_pb2.ListSessionsResponse(
            sessions=[message for _, message in page],
            next_page_token=str(page[-1][0]) if more else "",
        )

    def _session_message(self, session: Session) -> stream_pb2.Session:
        message = session.to_proto()
        message.outputs.extend(o.to_proto() for o in self._outputs.of_session(session.id))
        return message

    @grpc_errors
    async def CloseSession(self, request: stream_pb2.CloseSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.CloseSessionResponse:
        session = await self._live.enter(request.session_id, request.session_token)
        self._sessions.close(session.id)
        return stream_pb2.CloseSessionResponse()

    @grpc_errors
    async def JoinSession(self, request: stream_pb2.JoinSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.Actor:
        actor = await self._live.join(request.session_id, request.session_token, request.actor_name, request.bindings)
        return actor.to_proto()

    @grpc_errors
    async def RebindActor(self, request: stream_pb2.RebindActorRequest, context: grpc.aio.ServicerContext) -> stream_pb2.Actor:
        actor = await self._live.rebind(request.session_id, request.session_token, request.actor_id, request.bindings)
        return actor.to_proto()

    @grpc_errors
    async def LeaveSession(self, request: stream_pb2.LeaveSessionRequest, context: grpc.aio.ServicerContext) -> stream_pb2.LeaveSessionResponse:
        await self._live.leave(request.session_id, request.session_token, request.actor_id)
        return stream_pb2.LeaveSessionResponse()

    # Streams

    @grpc_stream_errors
    async def Animate(
        self, requests: AsyncIterator[stream_pb2.AnimateRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rig_pb2.RigStreamMessage]:
        incoming = aiter(requests)
        first = await anext(incoming, None)
        if first is None or first.WhichOneof("kind") != "start":
            raise BadRequest("an animate call must open with AnimateStart")
        start = first.start
        context.add_done_callback(self._streams.take(self._callers.of_grpc(context)))
        await self._live.warm_up()
        target = AnimateTarget(start.session_id, start.session_token, start.actor_id, tuple(start.avatar_ids))
        session, actor_id = await self._live.animate_target(target)
        actor_stream = self._live.start_actor(session, session.actor(actor_id))
        pipeline = actor_stream.pipeline
        stream = self._live.subscribe(session, actor_id=actor_id, batched=start.batch_frames, own_stream=True)
        actor_stream.ended.add_done_callback(lambda ended: stream.close(ended.result()))
        reader = asyncio.create_task(self._feed(incoming, pipeline, stream), name=f"feed-{actor_id[:8]}")

        def release(_: object = None) -> None:
            """Idempotent. Runs when the generator ends and when the RPC does: a client that
            vanishes may leave this generator suspended until it is garbage-collected."""
            reader.cancel()
            self._live.retire(session, stream)
            self._live.end_actor(actor_stream, input_ended("the animate call ended"))

        context.add_done_callback(release)
        try:
            # Headers once the call is accepted: the SDK holds its frames until then, since a
            # frame still being written when a call is refused turns the refusal's status into
            # INTERNAL (grpc/grpc#36066).
            await context.send_initial_metadata(())
            async for message in stream:
                yield message
            if pipeline.failed.done():
                pipeline.failed.result()  # raises the BadFrame or AnalysisFailed
            if reader.done() and not reader.cancelled():
                reader.result()  # raises what the reader met
            await end_stream(stream.end, context)  # cut off (session closed, actor left, shutdown)?
        finally:
            release()
            await asyncio.gather(reader, pipeline.task, return_exceptions=True)

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
            stream.close(input_ended())
        except BaseException:
            stream.close(actor_failed("the animate call failed"))
            raise

    @grpc_stream_errors
    async def Subscribe(
        self, request: stream_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rig_pb2.RigStreamMessage]:
        session = await self._live.enter(request.session_id, request.session_token)
        context.add_done_callback(self._streams.take(self._callers.of_grpc(context)))
        stream = self._live.subscribe(session, frozenset(request.avatar_ids), batched=request.batch_frames)

        context.add_done_callback(lambda _: self._live.retire(session, stream))  # see Animate's release
        try:
            # Headers now, not with the first frame: a client learns at once that it is
            # subscribed (engines show it), even while the session has no frames to send.
            await context.send_initial_metadata(())
            async for message in stream:
                yield message
            await end_stream(stream.end, context)  # a subscription only ends when it is cut off
        finally:
            self._live.retire(session, stream)

    # Engine outputs

    @grpc_errors
    async def AddOutput(self, request: stream_pb2.AddOutputRequest, context: grpc.aio.ServicerContext) -> stream_pb2.EngineOutput:
        wanted = request.output
        session = await self._live.enter(wanted.session_id, request.session_token)
        avatar = await asyncio.to_thread(self._live.store.get_avatar, require_id(wanted.avatar_id, "avatar_id"))
        if wanted.actor_id:
            session.actor(wanted.actor_id)  # NOT_FOUND unless the actor joined
        output = await self._outputs.add(wanted, request.session_token, avatar.spec)
        return output.to_proto()

    @grpc_errors
    async def RemoveOutput(self, request: stream_pb2.RemoveOutputRequest, context: grpc.aio.ServicerContext) -> stream_pb2.RemoveOutputResponse:
        session = await self._live.enter(request.session_id, request.session_token)
        self._outputs.remove(session.id, require_id(request.output_id, "output_id"))
        return stream_pb2.RemoveOutputResponse()

    @grpc_errors
    async def GetStats(self, request: stream_pb2.GetStatsRequest, context: grpc.aio.ServicerContext) -> stream_pb2.PipelineStats:
        return self._live.snapshot()
