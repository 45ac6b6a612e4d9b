"""How the server's exceptions become gRPC statuses: one table, one decorator per handler shape."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from freeavatar._proto import stream_pb2
from freeavatar.wire import STREAM_END_KEY
from freeavatar_server.live import errors
from freeavatar_server.live.subscriptions import StreamEnd

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

# How a stream the server ends, for a reason other than the end of its own input, finishes:
# never OK, so a client can tell being cut off from a clean end. UNAVAILABLE says "come back
# later" (the server is stopping); ABORTED says the stream's session or actor is gone.
STREAM_END_STATUS: dict[int, grpc.StatusCode] = {
    stream_pb2.STREAM_END_SERVER_SHUTDOWN: grpc.StatusCode.UNAVAILABLE,
    stream_pb2.STREAM_END_SESSION_CLOSED: grpc.StatusCode.ABORTED,
    stream_pb2.STREAM_END_ACTOR_LEFT: grpc.StatusCode.ABORTED,
    stream_pb2.STREAM_END_ACTOR_FAILED: grpc.StatusCode.ABORTED,
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


async def end_stream(end: StreamEnd | None, context: grpc.aio.ServicerContext) -> None:
    """Finish a response stream the way its end deserves: return (status OK) after a clean
    end, else abort with the end's status, its message, and its reason in the trailers."""
    if end is None or end.clean:
        return
    reason = stream_pb2.StreamEndReason.Name(end.code)
    code = STREAM_END_STATUS.get(end.code, grpc.StatusCode.ABORTED)
    await context.abort(code, end.message, trailing_metadata=((STREAM_END_KEY, reason),))


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
