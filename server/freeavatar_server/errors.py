"""How the server's exceptions become gRPC statuses: one table, one decorator for handlers."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from freeavatar.rig import InvalidRigSpec
from freeavatar_server.store import (
    AvatarNameTaken,
    AvatarNotFound,
    JobNotFound,
    ModelVersionNotFound,
)


class BadRequest(ValueError):
    """A request field the server cannot act on; the message names the field."""


_STATUS: dict[type[Exception], grpc.StatusCode] = {
    BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRigSpec: grpc.StatusCode.INVALID_ARGUMENT,
    AvatarNotFound: grpc.StatusCode.NOT_FOUND,
    JobNotFound: grpc.StatusCode.NOT_FOUND,
    ModelVersionNotFound: grpc.StatusCode.NOT_FOUND,
    AvatarNameTaken: grpc.StatusCode.ALREADY_EXISTS,
}

_Handler = TypeVar("_Handler", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def status_for(error: Exception) -> grpc.StatusCode | None:
    for cls, code in _STATUS.items():
        if isinstance(error, cls):
            return code
    return None


def register_status(cls: type[Exception], code: grpc.StatusCode) -> None:
    """Map another module's exception to a status (modules that import this one)."""
    _STATUS[cls] = code


async def abort_for(error: Exception, context: grpc.aio.ServicerContext, where: str) -> None:
    """Abort the call with the status `error` maps to; INTERNAL (logged) for anything unknown."""
    if isinstance(error, grpc.aio.AbortError):
        raise error
    code = status_for(error)
    if code is None:
        log.error("%s failed", where, exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {error}")
    await context.abort(code, str(error))


def grpc_stream_errors(handler: _Handler) -> _Handler:
    """`grpc_errors` for response-streaming handlers (async generators)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in handler(self, request, context):
                yield item
        except Exception as error:
            await abort_for(error, context, handler.__qualname__)

    return wrapper  # type: ignore[return-value]


def grpc_errors(handler: _Handler) -> _Handler:
    """Abort a unary-response handler with the status its exception maps to.

    Anything unexpected is logged with its traceback and becomes INTERNAL, so one bad call
    never takes the server down and the caller still learns what failed.
    """

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except Exception as error:
            await abort_for(error, context, handler.__qualname__)

    return wrapper  # type: ignore[return-value]


def require_id(value: str, field: str) -> str:
    if not value:
        raise BadRequest(f"{field} is empty")
    return value
