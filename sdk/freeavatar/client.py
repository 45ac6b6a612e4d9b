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

from freeavatar._proto import avatar_pb2, avatar_pb2_grpc, job_pb2, job_pb2_grpc
from freeavatar.avatar import Avatar, ModelKind, ModelVersion
from freeavatar.errors import from_rpc_error
from freeavatar.job import Job, JobEvent, RenderSample, UploadSummary, training_options
from freeavatar.rig import RigSpecLike, load_rig_spec

DEFAULT_ADDRESS = "localhost:50051"
_T = TypeVar("_T")
SampleLike = RenderSample | tuple[Sequence[float], bytes]


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
            async for rig, image in _aiter(samples):
                sample = avatar_pb2.RenderSample(rig=rig, image=image)
                yield avatar_pb2.UploadRenderSamplesRequest(avatar_id=avatar_id, sample=sample)

        try:
            reply = await self._avatars.UploadRenderSamples(requests(), metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
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


async def _aiter(samples: Iterable[SampleLike] | AsyncIterable[SampleLike]) -> AsyncIterator[tuple[list[float], bytes]]:
    if isinstance(samples, AsyncIterable):
        async for sample in samples:
            yield _sample_parts(sample)
    else:
        for sample in samples:
            yield _sample_parts(sample)


def _sample_parts(sample: SampleLike) -> tuple[list[float], bytes]:
    rig, image = (sample.rig, sample.image) if isinstance(sample, RenderSample) else sample
    return [float(v) for v in rig], bytes(image)


def _read_pem(source: bytes | str | Path | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()
