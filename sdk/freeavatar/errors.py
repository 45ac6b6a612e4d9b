"""Typed SDK errors: each carries the gRPC status code and the server's message."""

from __future__ import annotations

import grpc

from freeavatar.wire import STREAM_END_KEY


class FreeAvatarError(Exception):
    """A call the server refused or could not complete."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(FreeAvatarError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FreeAvatarError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FreeAvatarError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(FreeAvatarError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(FreeAvatarError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(FreeAvatarError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(FreeAvatarError):
    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(FreeAvatarError):
    code = grpc.StatusCode.CANCELLED


class ResourceExhausted(FreeAvatarError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unimplemented(FreeAvatarError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Aborted(FreeAvatarError):
    code = grpc.StatusCode.ABORTED


_BY_CODE: dict[grpc.StatusCode, type[FreeAvatarError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        Cancelled,
        ResourceExhausted,
        Unimplemented,
        Aborted,
    )
}


class StreamEnded(FreeAvatarError):
    """The server ended an animate or subscribe stream: it did not just run out.

    `reason` says why, for programs: "SERVER_SHUTDOWN" (reconnect later, or to another
    server), "SESSION_CLOSED", "ACTOR_LEFT" or "ACTOR_FAILED" (the StreamEndReason names of
    proto/freeavatar/v1/stream.proto without their STREAM_END_ prefix); the message says it in
    words, and `code` is the call's status (UNAVAILABLE for a shutdown, ABORTED otherwise).
    """

    def __init__(self, message: str, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(message, code)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code.name} ({self.reason}): {self.message}"


class UploadInterrupted(FreeAvatarError):
    """An upload the server had to stop (its disk filled, its store failed): `summary` (an
    UploadSummary) says exactly which items were stored (`summary.stored`) and which not;
    items from `summary.received` on were not read. `code` is the store's status
    (RESOURCE_EXHAUSTED for a full disk, UNAVAILABLE for an unusable store)."""

    def __init__(self, message: str, code: grpc.StatusCode, summary: object) -> None:
        super().__init__(message, code)
        self.summary = summary


def trailer(error: grpc.RpcError, key: str) -> str | bytes | None:
    """The value of one trailing metadata key of a failed call, if it is there."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for item in trailing or ():
        name, value = (item.key, item.value) if hasattr(item, "key") else item
        if name == key:
            return value
    return None


def from_rpc_error(error: grpc.RpcError) -> FreeAvatarError:
    """The SDK exception for a failed call (grpc.aio.AioRpcError or a sync grpc.RpcError)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    reason = trailer(error, STREAM_END_KEY)
    if reason:
        name = reason.decode() if isinstance(reason, bytes) else reason
        return StreamEnded(details or code.name, code, name.removeprefix("STREAM_END_"))
    cls = _BY_CODE.get(code, FreeAvatarError)
    return cls(details or code.name, code)
