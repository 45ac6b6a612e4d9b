"""Every gRPC request is decoded and bounded here, before its handler runs.

gRPC's own decoding happens inside its call machinery: bytes that do not parse come back as
UNKNOWN or INTERNAL with a server traceback per call. This interceptor takes the raw bytes
instead (a handler with no request deserializer gets them as they are), parses them itself and
holds the message to `transport.limits`; anything wrong is INVALID_ARGUMENT naming the problem,
with one rate-limited log line (`limits.log_rejected`). The servicers then only ever see
well-formed messages within the bounds.

It must be the innermost interceptor (last in the server's list): the API-key check wraps the
handler this returns, so an unauthenticated call is refused without its bytes being parsed.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from freeavatar_server.live.errors import Invalid
from freeavatar_server.transport.grpc.handlers import behavior_of, same_shape
from freeavatar_server.transport.limits import LIMITS, RequestLimits, decode_request, log_rejected


class RequestBounds(grpc.aio.ServerInterceptor):
    def __init__(self, limits: RequestLimits = LIMITS) -> None:
        self._limits = limits

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        return _bounded(handler, details.method, self._limits)


def _bounded(handler: grpc.RpcMethodHandler, method: str, limits: RequestLimits) -> grpc.RpcMethodHandler:
    """`handler` with the same shape, taking raw bytes and checking them first."""
    parse = handler.request_deserializer or (lambda raw: raw)
    behavior = behavior_of(handler)

    def checked(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return decode_request(parse, raw, limits)
        except Invalid as problem:
            log_rejected(method, context.peer(), str(problem))
            raise

    if handler.request_streaming:
        async def requests(raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            # Raises the Invalid into the handler, which maps it to INVALID_ARGUMENT like any
            # domain error (`status.grpc_errors`): a stream ends at its first bad message.
            async for raw in raws:
                yield checked(raw, context)

        async def first(raws: Any, context: grpc.aio.ServicerContext) -> Any:
            return requests(raws, context)
    else:
        async def first(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return checked(raw, context)
            except Invalid as problem:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem))

    # The same kind of callable as the handler's: an async generator for one that yields its
    # responses, a coroutine for one that returns (or writes them with context.write).
    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behavior):
        async def wrapped_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in behavior(await first(request, context), context):
                yield item

        wrapped = wrapped_stream
    else:
        async def wrapped_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await behavior(await first(request, context), context)

        wrapped = wrapped_call
    return same_shape(handler, wrapped, request_deserializer=None)
