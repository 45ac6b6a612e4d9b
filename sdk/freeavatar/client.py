"""Clients for a FreeAvatar server: `AsyncClient` for asyncio code, `Client` for blocking code.

Both speak the same gRPC contract (proto/freeavatar/v1); `Client` runs an `AsyncClient` on a
private event loop thread, so there is one implementation of every call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
from freeavatar.errors import InvalidArgument, from_rpc_error
from freeavatar.job import Job, JobEvent, Keyframe, RenderSample, UploadSummary, training_options
from freeavatar.outputs import EngineOutput, OutputProtocol, VmcNames, parse_target
from freeavatar.rig import RigSpecLike, load_rig_spec
from freeavatar.stream import Actor, ActorFrame, RigFrame, RigStream, Session

DEFAULT_ADDRESS = "localhost:50051"
_T = TypeVar("_T")
SampleLike = RenderSample | tuple[Sequence[float], bytes]
FrameLike = ActorFrame | bytes | np.ndarray
KeyframeLike = Keyframe | tuple[Sequence[float], bytes]  # (rig, actor image bytes)


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
            self._channel = grpc.aio.secure_channel(address, credentials)
        else:
            self._channel = grpc.aio.insecure_channel(address)
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
        avatars: list[Avatar] = []
        token = ""
        while True:
            request = avatar_pb2.ListAvatarsRequest(page_token=token)
            page = await self._unary(self._avatars.ListAvatars, request)
            avatars.extend(Avatar.from_proto(a) for a in page.avatars)
            token = page.next_page_token
            if not token:
                return avatars

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
        summary by their index; the good ones are kept."""

        async def requests() -> AsyncIterator[avatar_pb2.UploadRenderSamplesRequest]:
            async for item in _aiter(samples):
                rig, image = _sample_parts(item)
                sample = avatar_pb2.RenderSample(rig=rig, image=image)
                yield avatar_pb2.UploadRenderSamplesRequest(avatar_id=avatar_id, sample=sample)

        reply = await self._client_stream(self._avatars.UploadRenderSamples, requests())
        return UploadSummary.from_proto(reply)

    async def upload_keyframes(
        self, avatar_id: str, keyframes: Iterable[KeyframeLike] | AsyncIterable[KeyframeLike]
    ) -> UploadSummary:
        """Stream artist keyframes (rig values, actor image PNG/JPEG bytes) for `avatar_id`;
        animator jobs add them as a supervised term. Bad ones are reported in the summary by
        their index; the good ones are kept."""

        async def requests() -> AsyncIterator[avatar_pb2.UploadKeyframesRequest]:
            async for item in _aiter(keyframes):
                rig, image = _sample_parts(item)
                keyframe = avatar_pb2.Keyframe(rig=rig, actor_image=image)
                yield avatar_pb2.UploadKeyframesRequest(avatar_id=avatar_id, keyframe=keyframe)

        reply = await self._client_stream(self._avatars.UploadKeyframes, requests())
        return UploadSummary.from_proto(reply)

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
        """The server's live sessions (without tokens), with their actors and outputs."""
        reply = await self._unary(self._streams.ListSessions, stream_pb2.ListSessionsRequest())
        return [Session.from_proto(s) for s in reply.sessions]

    async def close_session(self, session_id: str) -> None:
        request = stream_pb2.CloseSessionRequest(session_id=session_id)
        await self._unary(self._streams.CloseSession, request)

    async def join_session(
        self, session_id: str, avatar_ids: Sequence[str], actor_name: str = "", token: str = ""
    ) -> Actor:
        """Join as an actor driving `avatar_ids`; stream its frames with animate(actor_id=...)."""
        request = stream_pb2.JoinSessionRequest(
            session_id=session_id,
            session_token=token,
            actor_name=actor_name,
            bindings=[stream_pb2.AvatarBinding(avatar_id=a) for a in avatar_ids],
        )
        return Actor.from_proto(await self._unary(self._streams.JoinSession, request))

    async def rebind_actor(self, session_id: str, actor_id: str, avatar_ids: Sequence[str]) -> Actor:
        """Change which avatars a joined actor drives, while it streams."""
        request = stream_pb2.RebindActorRequest(
            session_id=session_id,
            actor_id=actor_id,
            bindings=[stream_pb2.AvatarBinding(avatar_id=a) for a in avatar_ids],
        )
        return Actor.from_proto(await self._unary(self._streams.RebindActor, request))

    async def leave_session(self, session_id: str, actor_id: str) -> None:
        request = stream_pb2.LeaveSessionRequest(session_id=session_id, actor_id=actor_id)
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
    ) -> RigStream:
        """Send the actor's frames, receive their avatars' rig frames.

        Either `avatar_ids` (a private session for this call) or a joined `session_id` and
        `actor_id`. Frames are JPEG/PNG bytes, (H, W, 3) uint8 RGB arrays, or ActorFrames.
        """
        start = stream_pb2.AnimateStart(
            session_id=session_id, session_token=token, actor_id=actor_id, avatar_ids=avatar_ids,
            batch_frames=batch_frames,
        )

        async def requests() -> AsyncIterator[stream_pb2.AnimateRequest]:
            yield stream_pb2.AnimateRequest(start=start)
            async for frame in _aiter(frames):
                actor_frame = frame if isinstance(frame, ActorFrame) else ActorFrame(frame)
                yield stream_pb2.AnimateRequest(frame=actor_frame.to_proto())

        return RigStream(self._streams.Animate(requests(), metadata=self._metadata))

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

    async def remove_output(self, session_id: str, output_id: str) -> None:
        request = stream_pb2.RemoveOutputRequest(session_id=session_id, output_id=output_id)
        await self._unary(self._streams.RemoveOutput, request)

    async def list_outputs(self, session_id: str) -> list[EngineOutput]:
        """The session's outputs with their counters (packets sent, errors, frames skipped)."""
        return list((await self.get_session(session_id)).outputs)

    async def get_stats(self) -> stream_pb2.PipelineStats:
        """Per-stage timings and drop counts of the live pipeline."""
        return await self._unary(self._streams.GetStats, stream_pb2.GetStatsRequest())

    async def _client_stream(self, method: Any, requests: AsyncIterator[Any]) -> Any:
        try:
            return await method(requests, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None

    async def _unary(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None


class Client:
    """The blocking twin of `AsyncClient`, with the same methods and arguments."""

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
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def address(self) -> str:
        return self._client.address

    def wait_ready(self, timeout: float = 10.0) -> None:
        self._run(self._client.wait_ready(timeout))

    def register_avatar(self, spec: RigSpecLike) -> Avatar:
        return self._run(self._client.register_avatar(spec))

    def get_avatar(self, avatar_id: str) -> Avatar:
        return self._run(self._client.get_avatar(avatar_id))

    def list_avatars(self) -> list[Avatar]:
        return self._run(self._client.list_avatars())

    def delete_avatar(self, avatar_id: str) -> None:
        self._run(self._client.delete_avatar(avatar_id))

    def sample_rig_vectors(self, avatar_id: str, n: int, seed: int = 0) -> np.ndarray:
        return self._run(self._client.sample_rig_vectors(avatar_id, n, seed))

    def upload_render_samples(self, avatar_id: str, samples: Iterable[SampleLike]) -> UploadSummary:
        return self._run(self._client.upload_render_samples(avatar_id, samples))

    def list_model_versions(self, avatar_id: str, kind: ModelKind) -> list[ModelVersion]:
        return self._run(self._client.list_model_versions(avatar_id, kind))

    def activate_model_version(self, avatar_id: str, kind: ModelKind, version: int) -> ModelVersion:
        return self._run(self._client.activate_model_version(avatar_id, kind, version))

    def train_renderer(self, avatar_id: str, **options: float | int | None) -> Job:
        return self._run(self._client.train_renderer(avatar_id, **options))

    def finetune_animator(self, avatar_ids: Sequence[str] | str, **options: float | int | None) -> Job:
        return self._run(self._client.finetune_animator(avatar_ids, **options))

    def upload_keyframes(self, avatar_id: str, keyframes: Iterable[KeyframeLike]) -> UploadSummary:
        return self._run(self._client.upload_keyframes(avatar_id, keyframes))

    def get_job(self, job_id: str) -> Job:
        return self._run(self._client.get_job(job_id))

    def list_jobs(self, avatar_id: str = "") -> list[Job]:
        return self._run(self._client.list_jobs(avatar_id))

    def cancel_job(self, job_id: str) -> Job:
        return self._run(self._client.cancel_job(job_id))

    def watch_job(self, job_id: str) -> Iterator[JobEvent]:
        return self._iterate(self._client.watch_job(job_id))

    def wait_job(self, job_id: str) -> Job:
        return self._run(self._client.wait_job(job_id))

    def create_session(self, name: str = "") -> Session:
        return self._run(self._client.create_session(name))

    def get_session(self, session_id: str) -> Session:
        return self._run(self._client.get_session(session_id))

    def list_sessions(self) -> list[Session]:
        return self._run(self._client.list_sessions())

    def close_session(self, session_id: str) -> None:
        self._run(self._client.close_session(session_id))

    def join_session(
        self, session_id: str, avatar_ids: Sequence[str], actor_name: str = "", token: str = ""
    ) -> Actor:
        return self._run(self._client.join_session(session_id, avatar_ids, actor_name, token))

    def rebind_actor(self, session_id: str, actor_id: str, avatar_ids: Sequence[str]) -> Actor:
        return self._run(self._client.rebind_actor(session_id, actor_id, avatar_ids))

    def leave_session(self, session_id: str, actor_id: str) -> None:
        self._run(self._client.leave_session(session_id, actor_id))

    def animate(self, frames: Iterable[FrameLike], **target: Any) -> Iterator[RigFrame]:
        """Blocking `AsyncClient.animate`. The frames iterable is read on the client's own
        thread, so a slow generator paces the upload, as a camera would."""
        return self._iterate(self._run(_in_loop(self._client.animate, frames, **target)))

    def subscribe(self, session_id: str, **options: Any) -> Iterator[RigFrame]:
        return self._iterate(self._run(_in_loop(self._client.subscribe, session_id, **options)))

    def add_output(
        self, session_id: str, avatar_id: str, protocol: OutputProtocol, target: str, **options: Any
    ) -> EngineOutput:
        return self._run(self._client.add_output(session_id, avatar_id, protocol, target, **options))

    def remove_output(self, session_id: str, output_id: str) -> None:
        self._run(self._client.remove_output(session_id, output_id))

    def list_outputs(self, session_id: str) -> list[EngineOutput]:
        return self._run(self._client.list_outputs(session_id))

    def get_stats(self) -> stream_pb2.PipelineStats:
        return self._run(self._client.get_stats())

    def _iterate(self, events: AsyncIterator[_T]) -> Iterator[_T]:
        try:
            while True:
                try:
                    yield self._run(events.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(events.aclose())  # type: ignore[attr-defined]

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


async def _open(address: str, options: dict[str, Any]) -> AsyncClient:
    # grpc.aio binds a channel to the loop it is created on: create it on the client's own loop.
    return AsyncClient(address, **options)


async def _in_loop(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call `function` on the client's loop (grpc.aio calls bind to the loop they start on)."""
    return function(*args, **kwargs)


async def _aiter(items: Iterable[_T] | AsyncIterable[_T]) -> AsyncIterator[_T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _sample_parts(sample: SampleLike | KeyframeLike) -> tuple[list[float], bytes]:
    if isinstance(sample, Keyframe):
        return [float(v) for v in sample.rig], bytes(sample.actor_image)
    rig, image = (sample.rig, sample.image) if isinstance(sample, RenderSample) else sample
    return [float(v) for v in rig], bytes(image)


def _read_pem(source: bytes | str | Path | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()
