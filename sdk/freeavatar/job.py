"""Training jobs and render samples as the SDK hands them out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from freeavatar._proto import avatar_pb2, job_pb2


class JobKind(Enum):
    RENDERER_TRAINING = job_pb2.JOB_KIND_RENDERER_TRAINING
    ANIMATOR_FINETUNE = job_pb2.JOB_KIND_ANIMATOR_FINETUNE


class JobState(Enum):
    QUEUED = job_pb2.JOB_STATE_QUEUED
    RUNNING = job_pb2.JOB_STATE_RUNNING
    SUCCEEDED = job_pb2.JOB_STATE_SUCCEEDED
    FAILED = job_pb2.JOB_STATE_FAILED
    CANCELLED = job_pb2.JOB_STATE_CANCELLED

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Job:
    id: str
    kind: JobKind
    state: JobState
    avatar_ids: tuple[str, ...]
    progress: float
    metrics: dict[str, float]
    error: str
    created: datetime
    started: datetime | None
    ended: datetime | None
    result_version: int

    @classmethod
    def from_proto(cls, msg: job_pb2.Job) -> Job:
        return cls(
            id=msg.id,
            kind=JobKind(msg.kind),
            state=JobState(msg.state),
            avatar_ids=tuple(msg.avatar_ids),
            progress=msg.progress,
            metrics=dict(msg.metrics),
            error=msg.error,
            created=_time(msg.create_time),
            started=_time(msg.start_time) if msg.HasField("start_time") else None,
            ended=_time(msg.end_time) if msg.HasField("end_time") else None,
            result_version=msg.result_version,
        )


@dataclass(frozen=True)
class JobEvent:
    job: Job
    message: str


@dataclass(frozen=True)
class RenderSample:
    """A rig vector and the PNG or JPEG bytes the engine rendered from it."""

    rig: tuple[float, ...]
    image: bytes


@dataclass(frozen=True)
class Keyframe:
    """An artist keyframe: an actor image (PNG or JPEG bytes) and the rig values (in rig-spec
    order) an artist posed the avatar with for that expression."""

    rig: tuple[float, ...]
    actor_image: bytes


@dataclass(frozen=True)
class UploadSummary:
    """What an upload stored: every item read (the first `received`) is either stored or in
    `rejected` with its reason; `stored` lists the stored ones' indices."""

    accepted: int
    rejected: list[tuple[int, str]]  # (index in the upload, reason)
    total: int  # samples stored for the avatar after this upload
    received: int = 0  # items read; an interrupted upload (UploadInterrupted) read no more

    @classmethod
    def from_proto(cls, msg: avatar_pb2.UploadSummary) -> UploadSummary:
        received = msg.received or msg.accepted + len(msg.rejected)  # an older server
        return cls(msg.accepted, [(r.index, r.reason) for r in msg.rejected], msg.total, received)

    @property
    def stored(self) -> list[int]:
        rejected = {index for index, _ in self.rejected}
        return [i for i in range(self.received) if i not in rejected]


def training_options(**options: float | int | None) -> job_pb2.TrainingOptions:
    """TrainingOptions from keyword arguments (steps=, batch_size=, learning_rate=, image_size=,
    seed=, time_budget_s=, keyframe_limit=); None leaves the server's default."""
    known = set(job_pb2.TrainingOptions.DESCRIPTOR.fields_by_name)
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown training options: {', '.join(sorted(unknown))}")
    return job_pb2.TrainingOptions(**{k: v for k, v in options.items() if v is not None})


def _time(stamp: object) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined]
