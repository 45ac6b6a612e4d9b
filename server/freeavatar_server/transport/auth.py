"""API-key authentication: every call carries `authorization: Bearer <key>` metadata."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from freeavatar_server.transport.grpc.handlers import same_shape

# Load balancers and orchestrators probe health without credentials.
_OPEN_SERVICES = ("/grpc.health.v1.Health/",)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: frozenset[str]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_SERVICES):
            return handler
        problem = self._problem(dict(details.invocation_metadata or ()))
        return handler if problem is None else _refusing(handler, problem)

    def _problem(self, metadata: dict[str, Any]) -> str | None:
        return authorization_problem(metadata.get("authorization"), self._keys)


def authorization_problem(header: object, keys: tuple[bytes, ...]) -> str | None:
    """What is wrong with an `authorization` value (gRPC metadata or HTTP header), or None."""
    if not header:
        return "this server requires an API key: send 'authorization: Bearer <key>'"
    scheme, _, token = str(header).partition(" ")
    if scheme.lower() != "bearer" or not token:
        return "authorization must be 'Bearer <key>'"
    # Compare against every key in constant time, so timing reveals nothing.
    if not any([hmac.compare_digest(token.encode(), key) for key in keys]):
        return "the API key is not valid"
    return None


@dataclass(frozen=True)
class Callers:
    """Who a call or request counts against for the caps (live/caps.py): its API key on a
    server with keys, else the client's address. Unchecked keys on a server without any would
    let one client pass as many, so they are not used there."""

    keyed: bool

    def of(self, authorization: object, address: str) -> str:
        if self.keyed and authorization:
            token = str(authorization).partition(" ")[2]
            # a short hash names the key in messages and logs without revealing it
            return f"API key #{hashlib.sha256(token.encode()).hexdigest()[:8]}"
        return f"address {address or 'unknown'}"

    def of_grpc(self, context: grpc.aio.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata() or ())
        return self.of(metadata.get("authorization"), grpc_peer_host(context.peer() or ""))


def grpc_peer_host(peer: str) -> str:
    """The host of a gRPC peer string: "ipv4:127.0.0.1:5000" -> "127.0.0.1", "ipv6:[::1]:5000"
    -> "::1"; anything else (a unix socket) as it is."""
    scheme, _, rest = peer.partition(":")
    if scheme in ("ipv4", "ipv6") and ":" in rest:
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that fails with UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return same_shape(handler, refuse, request_deserializer=handler.request_deserializer)
