"""JobService: start, read, watch and cancel training jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from freeavatar._proto import job_pb2, job_pb2_grpc
from freeavatar_server.jobs.manager import JobManager
from freeavatar_server.live.errors import BadRequest, require_id
from freeavatar_server.store import JobNotFound, JobRecord, Store
from freeavatar_server.transport.grpc.avatars import page_position, stored_pages, timestamp
from freeavatar_server.transport.grpc.status import grpc_errors
from freeavatar_server.transport.limits import byte_bounded

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class JobService(job_pb2_grpc.JobServiceServicer):
    def __init__(self, store: Store, jobs: JobManager) -> None:
        self._store = store
        self._jobs = jobs

    @grpc_errors
    async def TrainRenderer(
        self, request: job_pb2.TrainRendererRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.Job:
        avatar_id = require_id(request.avatar_id, "avatar_id")
        await asyncio.to_thread(self._store.get_avatar, avatar_id)  # NOT_FOUND before queueing
        _check_options(request.options)
        record = await self._jobs.submit(job_pb2.JOB_KIND_RENDERER_TRAINING, [avatar_id], request.options)
        return job_message(record)

    @grpc_errors
    async def FinetuneAnimator(
        self, request: job_pb2.FinetuneAnimatorRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.Job:
        if not request.avatar_ids:
            raise BadRequest("avatar_ids is empty: name at least one avatar to tune")
        avatar_ids = [require_id(avatar_id, "avatar_ids") for avatar_id in request.avatar_ids]
        if len(set(avatar_ids)) != len(avatar_ids):
            raise BadRequest("avatar_ids names an avatar more than once")
        for avatar_id in avatar_ids:  # NOT_FOUND before queueing
            await asyncio.to_thread(self._store.get_avatar, avatar_id)
        _check_options(request.options)
        if request.options.HasField("image_size"):
            raise BadRequest("options.image_size does not apply to animator jobs (the encoder fixes it)")
        record = await self._jobs.submit(job_pb2.JOB_KIND_ANIMATOR_FINETUNE, avatar_ids, request.options)
        return job_message(record)

    @grpc_errors
    async def GetJob(self, request: job_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> job_pb2.Job:
        return job_message(await self._jobs.get(require_id(request.job_id, "job_id")))

    @grpc_errors
    async def ListJobs(
        self, request: job_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.ListJobsResponse:
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = page_position(request.page_token)
        return await asyncio.to_thread(self._job_page, after, limit, request.avatar_id)

    def _job_page(self, after: int, limit: int, avatar_id: str) -> job_pb2.ListJobsResponse:
        """A page bounded in bytes as well as count (a job may name a thousand avatars)."""
        records = stored_pages(lambda seq, n: self._store.list_jobs(seq, n, avatar_id), after)
        page, more = byte_bounded(((r.seq, job_message(r)) for r in records), limit)
        return job_pb2.ListJobsResponse(
            jobs=[message for _, message in page],
            next_page_token=str(page[-1][0]) if more else "",
        )

    async def WatchJob(
        self, request: job_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[job_pb2.JobEvent]:
        job_id = request.job_id
        if not job_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id is empty")
        try:
            await self._jobs.get(job_id)
        except JobNotFound as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        async for record, message in self._jobs.watch(job_id):
            yield job_pb2.JobEvent(job=job_message(record), message=message)

    @grpc_errors
    async def CancelJob(
        self, request: job_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.Job:
        return job_message(await self._jobs.cancel(require_id(request.job_id, "job_id")))


def _check_options(options: job_pb2.TrainingOptions) -> None:
    if options.HasField("steps") and options.steps == 0:
        raise BadRequest("options.steps must be positive")
    if options.HasField("batch_size") and not 1 <= options.batch_size <= 4096:
        raise BadRequest("options.batch_size must be in 1..4096")
    if options.HasField("learning_rate") and not 0 < options.learning_rate < 1:
        raise BadRequest("options.learning_rate must be in (0, 1)")
    if options.HasField("image_size") and options.image_size not in (16, 32, 64, 128, 256):
        raise BadRequest("options.image_size must be one of 16, 32, 64, 128, 256")
    if options.HasField("time_budget_s") and not options.time_budget_s > 0:
        raise BadRequest("options.time_budget_s must be positive")


def job_message(record: JobRecord) -> job_pb2.Job:
    message = job_pb2.Job(
        id=record.id,
        kind=record.kind,  # type: ignore[arg-type]
        state=record.state,  # type: ignore[arg-type]
        avatar_ids=record.avatar_ids,
        options=record.options,
        progress=record.progress,
        metrics=record.metrics,
        error=record.error,
        create_time=timestamp(record.created_us),
        result_version=record.result_version,
    )
    if record.started_us is not None:
        message.start_time.CopyFrom(timestamp(record.started_us))
    if record.ended_us is not None:
        message.end_time.CopyFrom(timestamp(record.ended_us))
    return message
