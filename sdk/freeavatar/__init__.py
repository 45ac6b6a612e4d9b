"""FreeAvatar SDK: enrol avatars, train their models, and stream rig frames to engines."""

from freeavatar._proto.stream_pb2 import PipelineStats  # what get_stats returns, as it is
from freeavatar.avatar import Avatar, ModelKind, ModelVersion
from freeavatar.client import (
    DEFAULT_ADDRESS,
    AsyncClient,
    Client,
    FrameLike,
    KeyframeLike,
    SampleLike,
)
from freeavatar.errors import (
    AlreadyExists,
    Cancelled,
    FailedPrecondition,
    FreeAvatarError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from freeavatar.job import Job, JobEvent, JobKind, JobState, Keyframe, RenderSample, UploadSummary
from freeavatar.outputs import EngineOutput, OutputProtocol, VmcNames
from freeavatar.rig import InvalidRigSpec, RigControl, RigSpec, RigSpecLike, load_rig_spec
from freeavatar.stream import (
    Actor,
    ActorFrame,
    AvatarControls,
    ExpressionReader,
    RigFrame,
    RigStream,
    Session,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "Actor",
    "ActorFrame",
    "AlreadyExists",
    "AsyncClient",
    "Avatar",
    "AvatarControls",
    "Cancelled",
    "Client",
    "EngineOutput",
    "ExpressionReader",
    "FailedPrecondition",
    "FrameLike",
    "FreeAvatarError",
    "InvalidArgument",
    "InvalidRigSpec",
    "Job",
    "JobEvent",
    "JobKind",
    "JobState",
    "Keyframe",
    "KeyframeLike",
    "ModelKind",
    "ModelVersion",
    "NotFound",
    "OutputProtocol",
    "PermissionDenied",
    "PipelineStats",
    "RenderSample",
    "ResourceExhausted",
    "RigControl",
    "RigFrame",
    "RigSpec",
    "RigSpecLike",
    "RigStream",
    "SampleLike",
    "Session",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UploadSummary",
    "VmcNames",
    "load_rig_spec",
]
