"""Typed SDK errors: each carries the gRPC status code and the server's message."""

from __future__ import annotations

import grpc


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
    )
}


def from_rpc_error(error: grpc.RpcError) -> FreeAvatarError:
    """The SDK exception for a failed call (grpc.aio.AioRpcError or a sync grpc.RpcError)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, FreeAvatarError)
    return cls(details or code.name, code)
