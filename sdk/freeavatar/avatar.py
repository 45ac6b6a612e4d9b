"""Avatars and their model versions as the SDK hands them out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from freeavatar._proto import avatar_pb2
from freeavatar.rig import RigSpec


class ModelKind(Enum):
    RENDERER = avatar_pb2.MODEL_KIND_RENDERER
    ANIMATOR = avatar_pb2.MODEL_KIND_ANIMATOR


@dataclass(frozen=True)
class ModelVersion:
    kind: ModelKind
    version: int
    job_id: str
    created: datetime
    metrics: dict[str, float]
    active: bool

    @classmethod
    def from_proto(cls, msg: avatar_pb2.ModelVersion) -> ModelVersion:
        return cls(
            kind=ModelKind(msg.kind),
            version=msg.version,
            job_id=msg.job_id,
            created=msg.create_time.ToDatetime(tzinfo=UTC),
            metrics=dict(msg.metrics),
            active=msg.active,
        )


@dataclass(frozen=True)
class Avatar:
    id: str
    spec: RigSpec
    created: datetime
    render_sample_count: int = 0
    keyframe_count: int = 0
    renderer: ModelVersion | None = None
    animator: ModelVersion | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def from_proto(cls, msg: avatar_pb2.Avatar) -> Avatar:
        return cls(
            id=msg.id,
            spec=RigSpec.from_proto(msg.spec),
            created=msg.create_time.ToDatetime(tzinfo=UTC),
            render_sample_count=msg.render_sample_count,
            keyframe_count=msg.keyframe_count,
            renderer=ModelVersion.from_proto(msg.renderer) if msg.HasField("renderer") else None,
            animator=ModelVersion.from_proto(msg.animator) if msg.HasField("animator") else None,
        )
