"""How the server's exceptions become gRPC statuses: one table, one decorator per handler shape."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from freeavatar_server.live import errors

# Every domain error's kind (live/errors.py) as a gRPC status: the one mapping.
STATUS: dict[type[Exception], grpc.StatusCode] = {
    errors.Invalid: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Conflict: grpc.StatusCode.ALREADY_EXISTS,
    errors.Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotReady: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Exhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Failed: grpc.StatusCode.INTERNAL,
}

_Handler = TypeVar("_Handler", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def status_for(error: BaseException) -> grpc.StatusCode | None:
    kind = errors.kind_of(error)
    return STATUS[kind] if kind else None


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
