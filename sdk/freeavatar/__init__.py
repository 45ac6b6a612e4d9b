"""FreeAvatar SDK: enrol avatars, train their models, and stream rig frames to engines."""

from freeavatar.avatar import Avatar, ModelKind, ModelVersion
from freeavatar.client import DEFAULT_ADDRESS, AsyncClient, Client
from freeavatar.errors import (
    AlreadyExists,
    FailedPrecondition,
    FreeAvatarError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from freeavatar.job import Job, JobEvent, JobKind, JobState, Keyframe, RenderSample, UploadSummary
from freeavatar.outputs import EngineOutput, OutputProtocol, VmcNames
from freeavatar.rig import InvalidRigSpec, RigControl, RigSpec, load_rig_spec

__all__ = [
    "DEFAULT_ADDRESS",
    "AlreadyExists",
    "AsyncClient",
    "Avatar",
    "Client",
    "EngineOutput",
    "FailedPrecondition",
    "FreeAvatarError",
    "InvalidArgument",
    "InvalidRigSpec",
    "Job",
    "JobEvent",
    "JobKind",
    "JobState",
    "Keyframe",
    "RenderSample",
    "UploadSummary",
    "ModelKind",
    "ModelVersion",
    "NotFound",
    "OutputProtocol",
    "PermissionDenied",
    "RigControl",
    "RigSpec",
    "Unauthenticated",
    "Unavailable",
    "VmcNames",
    "load_rig_spec",
]
