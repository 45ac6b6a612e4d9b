"""Wrapping a gRPC method handler in another of the same shape (unary or streaming, each way):
what the request-bounds and API-key interceptors both do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

_MAKE = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def behavior_of(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    """The servicer method a handler runs, whichever its shape."""
    return {
        (False, False): handler.unary_unary,
        (False, True): handler.unary_stream,
        (True, False): handler.stream_unary,
        (True, True): handler.stream_stream,
    }[(handler.request_streaming, handler.response_streaming)]


def same_shape(
    handler: grpc.RpcMethodHandler, behavior: Callable[..., Any], *, request_deserializer: Callable[[bytes], Any] | None
) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s shape and response serializer that runs `behavior` instead."""
    make = _MAKE[(handler.request_streaming, handler.response_streaming)]
    return make(behavior, request_deserializer=request_deserializer, response_serializer=handler.response_serializer)
