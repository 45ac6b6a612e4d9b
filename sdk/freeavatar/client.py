"""Clients for a FreeAvatar server: `AsyncClient` for asyncio code, `Client` for blocking code.

Both speak the same gRPC contract (proto/freeavatar/v1); `Client` runs an `AsyncClient` on a
private event loop thread, so there is one implementation of every call.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from pathlib import Path
from types import MethodType
from typing import (
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

import grpc
import numpy as np

from freeavatar._proto import (
    avatar_pb2,
    avatar_pb2_grpc,
    job_pb2,
    job_pb2_grpc,
    stream_pb2,
    stream_pb2_grpc,
)
from freeavatar.avatar import Avatar, ModelKind, ModelVersion
from freeavatar.errors import InvalidArgument, UploadInterrupted, from_rpc_error
from freeavatar.job import Job, JobEvent, Keyframe, RenderSample, UploadSummary, training_options
from freeavatar.outputs import EngineOutput, OutputProtocol, VmcNames, parse_target
from freeavatar.resume import LatestFrame, Resume, ResumingRigStream
from freeavatar.rig import RigSpecLike, load_rig_spec
from freeavatar.stream import (
    Actor,
    ActorFrame,
    ExpressionReader,
    RequestFeed,
    RigFrame,
    RigStream,
    Session,
)
from freeavatar.wire import CHANNEL_OPTIONS, MAX_MESSAGE_BYTES

DEFAULT_ADDRESS = "localhost:50051"
_T = TypeVar("_T")
_R = TypeVar("_R")
_P = ParamSpec("_P")
SampleLike = RenderSample | tuple[Sequence[float], bytes]
FrameLike = ActorFrame | bytes | np.ndarray
KeyframeLike = Keyframe | tuple[Sequence[float], bytes]  # (rig, actor image bytes)
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class AsyncClient:
    """A connection to a FreeAvatar server.

    `api_key` is sent as a bearer token on every call. `root_certificates` (PEM bytes or a path)
    turns on TLS and verifies the server against it; `tls=True` verifies against the system roots.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: bytes | str | Path | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self.address = address
        self._timeout = timeout
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        if root_certificates is not None or tls:
            credentials = grpc.ssl_channel_credentials(_read_pem(root_certificates))
            self._channel = grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._avatars = avatar_pb2_grpc.AvatarServiceStub(self._channel)
        self._jobs = job_pb2_grpc.JobServiceStub(self._channel)
        self._streams = stream_pb2_grpc.StreamServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channel connects (a server that is still starting)."""
        await asyncio.wait_for(self._channel.channel_ready(), timeout)

    # Avatars

    async def register_avatar(self, spec: RigSpecLike) -> Avatar:
        """Enrol an avatar from a RigSpec, a dict, or the path of a JSON rig spec."""
        request = avatar_pb2.RegisterAvatarRequest(spec=load_rig_spec(spec).to_proto())
        return Avatar.from_proto(await self._unary(self._avatars.RegisterAvatar, request))

    async def get_avatar(self, avatar_id: str) -> Avatar:
        request = avatar_pb2.GetAvatarRequest(avatar_id=avatar_id)
        return Avatar.from_proto(await self._unary(self._avatars.GetAvatar, request))

    async def list_avatars(self) -> list[Avatar]:
        """Every registered avatar, oldest first."""
        pages = self._pages(self._avatars.ListAvatars, avatar_pb2.ListAvatarsRequest, "avatars")
        return [Avatar.from_proto(a) async for a in pages]

    async def delete_avatar(self, avatar_id: str) -> None:
        request = avatar_pb2.DeleteAvatarRequest(avatar_id=avatar_id)
        await self._unary(self._avatars.DeleteAvatar, request)

    # Render samples and model versions

    async def sample_rig_vectors(self, avatar_id: str, n: int, seed: int = 0) -> np.ndarray:
        """(n, controls) rig vectors for the engine to render: each control's range and
        plausible combinations of controls."""
        request = avatar_pb2.SampleRigVectorsRequest(avatar_id=avatar_id, count=n, seed=seed)
        reply = await self._unary(self._avatars.SampleRigVectors, request)
        return np.array([v.values for v in reply.vectors], dtype=np.float32)

    async def upload_render_samples(
        self, avatar_id: str, samples: Iterable[SampleLike] | AsyncIterable[SampleLike]
    ) -> UploadSummary:
        """Stream (rig, PNG/JPEG bytes) samples to the server. Bad samples are reported in the
        summary by their index; the good ones are kept. UploadInterrupted (with the summary of
        what was stored) if the server had to stop, its disk full."""

        def request(rig: Sequence[float], image: bytes) -> avatar_pb2.UploadRenderSamplesRequest:
            sample = avatar_pb2.RenderSample(rig=rig, image=image)
            return avatar_pb2.UploadRenderSamplesRequest(avatar_id=avatar_id, sample=sample)

        return await self._upload(self._avatars.UploadRenderSamples, samples, request)

    async def upload_keyframes(
        self, avatar_id: str, keyframes: Iterable[KeyframeLike] | AsyncIterable[KeyframeLike]
    ) -> UploadSummary:
        """Stream artist keyframes (rig values, actor image PNG/JPEG bytes) for `avatar_id`;
        animator jobs fit the avatar to them (`freeavatar avatars suggest-keyframes` picks the
        frames worth posing). Bad ones are reported in the summary by their index; the good ones
        are kept (UploadInterrupted as upload_render_samples)."""

        def request(rig: Sequence[float], image: bytes) -> avatar_pb2.UploadKeyframesRequest:
            keyframe = avatar_pb2.Keyframe(rig=rig, actor_image=image)
            return avatar_pb2.UploadKeyframesRequest(avatar_id=avatar_id, keyframe=keyframe)

        return await self._upload(self._avatars.UploadKeyframes, keyframes, request)

    async def _upload(
        self,
        method: Any,
        items: Iterable[SampleLike] | AsyncIterable[SampleLike],
        request: Callable[[Sequence[float], bytes], Any],
    ) -> UploadSummary:
        """One upload call: items over the message size limit are rejected here, by index,
        without being sent (gRPC would fail the whole call on one), and the server's indices,
        which count only the items sent, are turned back into the caller's."""
        sent: list[int] = []  # the caller's index of each item sent, in order
        too_large: list[tuple[int, str]] = []
        read = 0

        async def requests() -> AsyncIterator[Any]:
            nonlocal read
            async for index, item in _aenumerate(_aiter(items)):
                read = index + 1
                message = request(*_sample_parts(item))
                size = message.ByteSize()
                if size > MAX_MESSAGE_BYTES:
                    limit = f"{MAX_MESSAGE_BYTES:,} bytes ({MAX_MESSAGE_BYTES / 2**20:g} MB)"
                    too_large.append((index, f"the item is {size:,} bytes, over gRPC's message limit of {limit}"))
                    continue
                sent.append(index)
                yield message

        reply = await self._client_stream(method, requests())
        server = UploadSummary.from_proto(reply)
        received = read
        if reply.HasField("stopped"):  # the server read no further: neither did this upload
            received = sent[server.received - 1] + 1 if server.received else 0
            too_large = [item for item in too_large if item[0] < received]
        rejected = sorted([(sent[i], reason) for i, reason in server.rejected] + too_large)
        summary = UploadSummary(server.accepted, rejected, server.total, received)
        if reply.HasField("stopped"):
            code = _STATUS_BY_NUMBER.get(reply.stopped.code, grpc.StatusCode.UNKNOWN)
            raise UploadInterrupted(reply.stopped.reason, code, summary)
        return summary

    async def list_model_versions(self, avatar_id: str, kind: ModelKind) -> list[ModelVersion]:
        request = avatar_pb2.ListModelVersionsRequest(avatar_id=avatar_id, kind=kind.value)
        reply = await self._unary(self._avatars.ListModelVersions, request)
        return [ModelVersion.from_proto(v) for v in reply.versions]

    async def activate_model_version(
        self, avatar_id: str, kind: ModelKind, version: int
    ) -> ModelVersion:
        """Make `version` the live one; running streams switch to it without dropping."""
        request = avatar_pb2.ActivateModelVersionRequest(
            avatar_id=avatar_id, kind=kind.value, version=version
        )
        return ModelVersion.from_proto(await self._unary(self._avatars.ActivateModelVersion, request))

    # Jobs

    async def train_renderer(self, avatar_id: str, **options: float | int | None) -> Job:
        """Queue training of the avatar's neural renderer on its render samples. Options:
        steps, batch_size, learning_rate, image_size, seed, time_budget_s."""
        request = job_pb2.TrainRendererRequest(
            avatar_id=avatar_id, options=training_options(**options)
        )
        return Job.from_proto(await self._unary(self._jobs.TrainRenderer, request))

    async def finetune_animator(self, avatar_ids: Sequence[str] | str, **options: float | int | None) -> Job:
        """Queue tuning of the shared animator for these avatars (each needs a trained renderer).
        Options: steps, batch_size, learning_rate, seed, time_budget_s, keyframe_limit."""
        ids = [avatar_ids] if isinstance(avatar_ids, str) else list(avatar_ids)
        request = job_pb2.FinetuneAnimatorRequest(avatar_ids=ids, options=training_options(**options))
        return Job.from_proto(await self._unary(self._jobs.FinetuneAnimator, request))

    async def get_job(self, job_id: str) -> Job:
        return Job.from_proto(await self._unary(self._jobs.GetJob, job_pb2.GetJobRequest(job_id=job_id)))

    async def list_jobs(self, avatar_id: str = "") -> list[Job]:
        """Every job, oldest first; only the avatar's jobs when `avatar_id` is given."""
        jobs: list[Job] = []
        token = ""
        while True:
            request = job_pb2.ListJobsRequest(avatar_id=avatar_id, page_token=token)
            page = await self._unary(self._jobs.ListJobs, request)
            jobs.extend(Job.from_proto(j) for j in page.jobs)
            token = page.next_page_token
            if not token:
                return jobs

    async def cancel_job(self, job_id: str) -> Job:
        return Job.from_proto(await self._unary(self._jobs.CancelJob, job_pb2.CancelJobRequest(job_id=job_id)))

    async def watch_job(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job now, then after every change (progress, metrics, state) until it ends."""
        call = self._jobs.WatchJob(job_pb2.WatchJobRequest(job_id=job_id), metadata=self._metadata)
        try:
            async for event in call:
                yield JobEvent(Job.from_proto(event.job), event.message)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def wait_job(self, job_id: str) -> Job:
        """Wait for the job to end and return its final record."""
        async for event in self.watch_job(job_id):
            if event.job.state.finished:
                return event.job
        return await self.get_job(job_id)

    # Sessions and streams

    async def create_session(self, name: str = "") -> Session:
        """A session (virtual meeting) for actors and subscribers; keep its `token`."""
        request = stream_pb2.CreateSessionRequest(name=name)
        return Session.from_proto(await self._unary(self._streams.CreateSession, request))

    async def get_session(self, session_id: str) -> Session:
        request = stream_pb2.GetSessionRequest(session_id=session_id)
        return Session.from_proto(await self._unary(self._streams.GetSession, request))

    async def list_sessions(self) -> list[Session]:
        """The server's live sessions (without tokens), with their actors and outputs, oldest
        first."""
        pages = self._pages(self._streams.ListSessions, stream_pb2.ListSessionsRequest, "sessions")
        return [Session.from_proto(s) async for s in pages]

    async def close_session(self, session_id: str, token: str = "") -> None:
        """End the session and every stream in it (they end with StreamEnded, SESSION_CLOSED).
        On a server with API keys this takes the session's `token`, as joining does."""
        request = stream_pb2.CloseSessionRequest(session_id=session_id, session_token=token)
        await self._unary(self._streams.CloseSession, request)

    async def join_session(
        self,
        session_id: str,
        avatar_ids: Sequence[str],
        actor_name: str = "",
        token: str = "",
        reader: ExpressionReader = ExpressionReader.AUTO,
    ) -> Actor:
        """Join as an actor driving `avatar_ids`; stream its frames with animate(actor_id=...).
        `reader`: what reads the face for the avatars' controls (ExpressionReader)."""
        request = stream_pb2.JoinSessionRequest(
            session_id=session_id,
            session_token=token,
            actor_name=actor_name,
            bindings=_bindings(avatar_ids, reader),
        )
        return Actor.from_proto(await self._unary(self._streams.JoinSession, request))

    async def rebind_actor(
        self,
        session_id: str,
        actor_id: str,
        avatar_ids: Sequence[str],
        reader: ExpressionReader = ExpressionReader.AUTO,
        token: str = "",
    ) -> Actor:
        """Change which avatars a joined actor drives, and how, while it streams (the session's
        `token` on a server with API keys)."""
        request = stream_pb2.RebindActorRequest(
            session_id=session_id,
            actor_id=actor_id,
            bindings=_bindings(avatar_ids, reader),
            session_token=token,
        )
        return Actor.from_proto(await self._unary(self._streams.RebindActor, request))

    async def leave_session(self, session_id: str, actor_id: str, token: str = "") -> None:
        """Remove the actor; its animate call ends with StreamEnded (ACTOR_LEFT). The session's
        `token` on a server with API keys."""
        request = stream_pb2.LeaveSessionRequest(session_id=session_id, actor_id=actor_id, session_token=token)
        await self._unary(self._streams.LeaveSession, request)

    def animate(
        self,
        frames: Iterable[FrameLike] | AsyncIterable[FrameLike],
        *,
        avatar_ids: Sequence[str] = (),
        session_id: str = "",
        actor_id: str = "",
        token: str = "",
        batch_frames: bool = True,
        resume: Resume | None = None,
    ) -> RigStream | ResumingRigStream:
        """Send the actor's frames, receive their avatars' rig frames.

        Either `avatar_ids` (a private session for this call) or a joined `session_id` and
        `actor_id`. Frames are JPEG/PNG bytes, (H, W, 3) uint8 RGB arrays, or ActorFrames.
        With `resume` (a joined actor only), a call broken because its server went away is made
        again, with backoff, and the actor goes on in its session (freeavatar.resume).
        """
        start = stream_pb2.AnimateStart(
            session_id=session_id, session_token=token, actor_id=actor_id, avatar_ids=avatar_ids,
            batch_frames=batch_frames,
        )

        def open_call(source: Iterable[FrameLike] | AsyncIterable[FrameLike]) -> RigStream:
            async def requests() -> AsyncIterator[stream_pb2.AnimateRequest]:
                yield stream_pb2.AnimateRequest(start=start)
                # Frames only once the server's headers say it accepted the call: a frame write
                # in flight when it refuses would turn its status into INTERNAL (grpc/grpc#36066).
                await call.initial_metadata()
                if call.done():
                    return
                async for frame in _aiter(source):
                    actor_frame = frame if isinstance(frame, ActorFrame) else ActorFrame(frame)
                    yield stream_pb2.AnimateRequest(frame=actor_frame.to_proto())

            feed = RequestFeed(requests())
            call = self._streams.Animate(feed, metadata=self._metadata)
            return RigStream(call, feed)

        if resume is None:
            return open_call(frames)
        if not (session_id and actor_id):
            raise InvalidArgument(
                "resume needs a joined actor (session_id and actor_id): a private session ends with its call"
            )
        return ResumingRigStream(open_call, LatestFrame(frames), resume)

    def subscribe(
        self, session_id: str, *, avatar_ids: Sequence[str] = (), token: str = "", batch_frames: bool = True
    ) -> RigStream:
        """Every rig frame of a session (or of some of its avatars) as it is made.

        `batch_frames` (both calls): the server packs each source frame's rig frames into one
        message, which saves CPU on both ends; the iterator yields the same RigFrames either way.
        """
        request = stream_pb2.SubscribeRequest(
            session_id=session_id, session_token=token, avatar_ids=avatar_ids, batch_frames=batch_frames
        )
        return RigStream(self._streams.Subscribe(request, metadata=self._metadata))

    async def add_output(
        self,
        session_id: str,
        avatar_id: str,
        protocol: OutputProtocol,
        target: str,
        *,
        subject_name: str = "",
        actor_id: str = "",
        vmc_names: VmcNames = VmcNames.AUTO,
        token: str = "",
    ) -> EngineOutput:
        """Have the server push `avatar_id`'s frames in this session to `target` (HOST:PORT, or
        HOST for the protocol's default port) as Live Link Face packets or VMC messages.

        `subject_name` names the Live Link subject (default: the avatar's name); `actor_id` picks
        one actor's frames when several drive the avatar; `vmc_names` is the VMC name table.
        The output lasts until `remove_output` or the end of the session.
        """
        try:
            host, port = parse_target(target)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        output = stream_pb2.EngineOutput(
            session_id=session_id,
            avatar_id=avatar_id,
            protocol=protocol.value,
            host=host,
            port=port,
            subject_name=subject_name,
            actor_id=actor_id,
            vmc_blend_names=vmc_names.value,
        )
        request = stream_pb2.AddOutputRequest(output=output, session_token=token)
        return EngineOutput.from_proto(await self._unary(self._streams.AddOutput, request))

    async def remove_output(self, session_id: str, output_id: str, token: str = "") -> None:
        request = stream_pb2.RemoveOutputRequest(session_id=session_id, output_id=output_id, session_token=token)
        await self._unary(self._streams.RemoveOutput, request)

    async def list_outputs(self, session_id: str) -> list[EngineOutput]:
        """The session's outputs with their counters (packets sent, errors, frames skipped)."""
        return list((await self.get_session(session_id)).outputs)

    async def get_stats(self) -> stream_pb2.PipelineStats:
        """Per-stage timings and drop counts of the live pipeline."""
        return await self._unary(self._streams.GetStats, stream_pb2.GetStatsRequest())

    async def _client_stream(self, method: Any, requests: AsyncIterator[Any]) -> Any:
        feed = RequestFeed(requests)
        try:
            return await method(feed, metadata=self._metadata)
        except asyncio.CancelledError:
            feed.reraise()  # the caller's samples iterator raised: that, not the cancellation
            raise
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None

    async def _unary(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None

    async def _pages(self, method: Any, request_type: Any, field: str) -> AsyncIterator[Any]:
        """Every item of a paged listing, following `next_page_token` to the last page."""
        token = ""
        while True:
            page = await self._unary(method, request_type(page_token=token))
            for item in getattr(page, field):
                yield item
            token = page.next_page_token
            if not token:
                return


class _Blocking(Generic[_P, _R]):
    """`Client.<name>`: runs `AsyncClient.<name>` on the client's event loop thread and waits
    for its result.

    A descriptor, not a function built at import, so that type checkers carry the async method's
    parameters (`_P`) and result (`_R`) over to the blocking one; `help()` and IDEs get its
    signature and docstring from the function it hands out.
    """

    def __init__(self, method: Callable[Concatenate[AsyncClient, _P], Coroutine[Any, Any, _R]]) -> None:
        def blocking(client: Client, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            return client._run(method(client._client, *args, **kwargs))

        self._function = _mirror(blocking, method, inspect.signature(method).return_annotation)

    def __set_name__(self, owner: type, name: str) -> None:
        _check_name(self._function, owner, name)

    @overload
    def __get__(self, client: None, owner: type) -> Callable[Concatenate[Client, _P], _R]: ...

    @overload
    def __get__(self, client: Client, owner: type) -> Callable[_P, _R]: ...

    def __get__(self, client: Client | None, owner: type) -> Callable[..., _R]:
        return self._function if client is None else MethodType(self._function, client)


class _BlockingIterator(Generic[_P, _T]):
    """`Client.<name>` for an AsyncClient method that returns an async iterator (an async
    generator, or a RigStream): a blocking iterator over the same items.

    The async method is called on the client's loop (grpc.aio calls bind to the loop they start
    on) when the blocking one is, so a refused call fails at its first item, as in AsyncClient.
    """

    def __init__(self, method: Callable[Concatenate[AsyncClient, _P], AsyncIterator[_T]]) -> None:
        def blocking(client: Client, /, *args: _P.args, **kwargs: _P.kwargs) -> Iterator[_T]:
            return client._iterate(client._run(_in_loop(method, client._client, *args, **kwargs)))

        self._function = _mirror(blocking, method, f"Iterator[{_item_type(method).__name__}]")

    def __set_name__(self, owner: type, name: str) -> None:
        _check_name(self._function, owner, name)

    @overload
    def __get__(self, client: None, owner: type) -> Callable[Concatenate[Client, _P], Iterator[_T]]: ...

    @overload
    def __get__(self, client: Client, owner: type) -> Callable[_P, Iterator[_T]]: ...

    def __get__(self, client: Client | None, owner: type) -> Callable[..., Iterator[_T]]:
        return self._function if client is None else MethodType(self._function, client)


def _mirror(blocking: Callable[..., Any], method: Callable[..., Any], returns: Any) -> Callable[..., Any]:
    """`blocking` dressed as `method` for help() and IDEs: its name, docstring and parameters,
    and the blocking result type."""
    functools.update_wrapper(blocking, method)
    blocking.__qualname__ = f"Client.{method.__name__}"
    blocking.__doc__ = method.__doc__ or f"The blocking form of `AsyncClient.{method.__name__}`."
    # inspect.signature stops at __signature__ rather than follow __wrapped__ to the async one.
    blocking.__signature__ = inspect.signature(method).replace(return_annotation=returns)  # type: ignore[attr-defined]
    return blocking


def _check_name(function: Callable[..., Any], owner: type, name: str) -> None:
    # `get_job = _Blocking(AsyncClient.list_jobs)` would type-check: refuse it at import.
    if name != function.__name__:
        raise TypeError(f"{owner.__name__}.{name} mirrors AsyncClient.{function.__name__}")


def _item_type(method: Callable[..., Any]) -> type:
    """What the async iterator `method` returns yields: X of AsyncIterator[X], or what a class
    such as RigStream returns from __anext__."""
    returned = get_type_hints(method)["return"]
    if get_origin(returned) in (AsyncIterator, AsyncGenerator, AsyncIterable):
        return get_args(returned)[0]
    return get_type_hints(returned.__anext__)["return"]


class Client:
    """The blocking twin of `AsyncClient`, with the same methods and arguments.

    It runs an `AsyncClient` on a private event loop thread; each method below runs its async
    namesake there and waits for it, and the streaming ones (watch_job, animate, subscribe)
    return blocking iterators.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="freeavatar-client", daemon=True
        )
        self._thread.start()
        self._client: AsyncClient = self._run(_open(address, options))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and stop the client's thread; calling it again does nothing."""
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def address(self) -> str:
        return self._client.address

    wait_ready = _Blocking(AsyncClient.wait_ready)

    # Avatars, render samples and model versions
    register_avatar = _Blocking(AsyncClient.register_avatar)
    get_avatar = _Blocking(AsyncClient.get_avatar)
    list_avatars = _Blocking(AsyncClient.list_avatars)
    delete_avatar = _Blocking(AsyncClient.delete_avatar)
    sample_rig_vectors = _Blocking(AsyncClient.sample_rig_vectors)
    upload_render_samples = _Blocking(AsyncClient.upload_render_samples)
    upload_keyframes = _Blocking(AsyncClient.upload_keyframes)
    list_model_versions = _Blocking(AsyncClient.list_model_versions)
    activate_model_version = _Blocking(AsyncClient.activate_model_version)

    # Jobs
    train_renderer = _Blocking(AsyncClient.train_renderer)
    finetune_animator = _Blocking(AsyncClient.finetune_animator)
    get_job = _Blocking(AsyncClient.get_job)
    list_jobs = _Blocking(AsyncClient.list_jobs)
    cancel_job = _Blocking(AsyncClient.cancel_job)
    watch_job = _BlockingIterator(AsyncClient.watch_job)
    wait_job = _Blocking(AsyncClient.wait_job)

    # Sessions, streams and engine outputs
    create_session = _Blocking(AsyncClient.create_session)
    get_session = _Blocking(AsyncClient.get_session)
    list_sessions = _Blocking(AsyncClient.list_sessions)
    close_session = _Blocking(AsyncClient.close_session)
    join_session = _Blocking(AsyncClient.join_session)
    rebind_actor = _Blocking(AsyncClient.rebind_actor)
    leave_session = _Blocking(AsyncClient.leave_session)
    subscribe = _BlockingIterator(AsyncClient.subscribe)
    add_output = _Blocking(AsyncClient.add_output)
    remove_output = _Blocking(AsyncClient.remove_output)
    list_outputs = _Blocking(AsyncClient.list_outputs)
    get_stats = _Blocking(AsyncClient.get_stats)

    def animate(
        self,
        frames: Iterable[FrameLike],
        *,
        avatar_ids: Sequence[str] = (),
        session_id: str = "",
        actor_id: str = "",
        token: str = "",
        batch_frames: bool = True,
        resume: Resume | None = None,
    ) -> Iterator[RigFrame]:
        """Blocking `AsyncClient.animate`: send the actor's frames, receive their avatars' rig
        frames. The frames iterable is read on the client's own thread, so a slow generator
        paces the upload, as a camera would; what it raises, the returned iterator raises."""
        stream = self._run(
            _in_loop(
                self._client.animate,
                frames,
                avatar_ids=avatar_ids,
                session_id=session_id,
                actor_id=actor_id,
                token=token,
                batch_frames=batch_frames,
                resume=resume,
            )
        )
        return self._iterate(stream)

    def _iterate(self, events: AsyncIterator[_T]) -> Iterator[_T]:
        try:
            while True:
                try:
                    yield self._run(_anext(events))
                except StopAsyncIteration:
                    return
        finally:
            self._run(events.aclose())  # type: ignore[attr-defined]

    def _run(self, coroutine: Coroutine[Any, Any, _R]) -> _R:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


def _bindings(avatar_ids: Sequence[str], reader: ExpressionReader) -> list[stream_pb2.AvatarBinding]:
    return [stream_pb2.AvatarBinding(avatar_id=a, reader=reader.value) for a in avatar_ids]


async def _open(address: str, options: dict[str, Any]) -> AsyncClient:
    # grpc.aio binds a channel to the loop it is created on: create it on the client's own loop.
    return AsyncClient(address, **options)


async def _in_loop(function: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Call `function` on the client's loop (grpc.aio calls bind to the loop they start on)."""
    return function(*args, **kwargs)


async def _anext(items: AsyncIterator[_T]) -> _T:
    # A coroutine for run_coroutine_threadsafe (an async generator's __anext__ is an awaitable).
    return await anext(items)


async def _aiter(items: Iterable[_T] | AsyncIterable[_T]) -> AsyncIterator[_T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def _aenumerate(items: AsyncIterator[_T]) -> AsyncIterator[tuple[int, _T]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1


def _sample_parts(sample: SampleLike | KeyframeLike) -> tuple[list[float], bytes]:
    if isinstance(sample, Keyframe):
        return [float(v) for v in sample.rig], bytes(sample.actor_image)
    rig, image = (sample.rig, sample.image) if isinstance(sample, RenderSample) else sample
    return [float(v) for v in rig], bytes(image)


def _read_pem(source: bytes | str | Path | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()
