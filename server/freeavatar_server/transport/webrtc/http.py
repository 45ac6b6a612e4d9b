"""The HTTP side of the server (aiohttp): WHIP and WHEP-like endpoints, and the try-it page.

    POST   /whip?avatar=A&avatar=B                   video in, a private session for this peer
    POST   /whip/sessions/S?avatar=A&name=ada        a new actor in session S, for this peer
    POST   /whip/sessions/S/actors/X                 actor X (joined over gRPC) of session S
    POST   /whep/sessions/S[?avatar=A]               rig frames of session S, no media
    DELETE /peers/P                                   end a peer (the Location of its POST)
    GET    /                                          the page: camera in, avatars out

POSTs carry an SDP offer (Content-Type: application/sdp) and get 201 with the answer and the
peer's URL in Location (RFC 9725). Rig frames go back over the data channel the peer opened,
labelled "rig". `token=` carries the session token on servers with API keys; the API key goes
in `Authorization: Bearer`. Errors are text naming the problem, with the HTTP status of the
error's kind (`HTTP_STATUS`: 400, 403, 404, 409, 429, 503; 401 without a key, 400 for a body that is
not UTF-8 or a query value past `transport.limits`, 413 for one over 64 kB, 415 for a body
that is not SDP, 500 for anything unexpected). Refused requests get one rate-limited log line;
the access log (at DEBUG) leaves out query strings, which carry session tokens.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from freeavatar.rig import MAX_NAME_LENGTH
from freeavatar_server.live import errors
from freeavatar_server.transport.auth import Callers, authorization_problem
from freeavatar_server.transport.limits import LIMITS, OutOfBounds, log_rejected
from freeavatar_server.transport.webrtc.peers import PublishTarget, WebRtcService

log = logging.getLogger(__name__)

# Every domain error's kind (live/errors.py) as an HTTP status; Failed, and anything
# unexpected, is a 500 and logged.
HTTP_STATUS: dict[type[Exception], int] = {
    errors.Invalid: 400,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.NotReady: 409,
    errors.Exhausted: 429,
    errors.Unavailable: 503,
}
OPEN_PATHS = ("/",)  # the page holds no secrets; everything it calls needs the key
MAX_OFFER_BYTES = 64 * 1024  # offers are a few kB

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpServer:
    """Owns the aiohttp server for its lifetime: `start`, then `stop` (which ends every peer)."""

    def __init__(
        self,
        webrtc: WebRtcService,
        keys: frozenset[str],
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.webrtc = webrtc
        self._keys = tuple(k.encode() for k in keys)
        self._callers = Callers(keyed=bool(keys))
        self._host, self._port, self._tls = host, port, tls
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_OFFER_BYTES)
        app.router.add_get("/", page)
        app.router.add_post("/whip", self.whip)
        app.router.add_post("/whip/sessions/{session}", self.whip)
        app.router.add_post("/whip/sessions/{session}/actors/{actor}", self.whip)
        app.router.add_post("/whep/sessions/{session}", self.whep)
        app.router.add_delete("/peers/{peer}", self.delete)
        app.router.add_patch("/peers/{peer}", self.patch)
        return app

    async def start(self) -> int:
        self._runner = web.AppRunner(
            self.app(),
            access_log=log if log.isEnabledFor(logging.DEBUG) else None,
            access_log_class=RedactedAccessLogger,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls, reuse_port=False)
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            raise OSError(f"cannot serve HTTP on {self._host}:{self._port}: {error.strerror}") from None
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        await self.webrtc.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # Handlers

    async def whip(self, request: web.Request) -> web.Response:
        target = PublishTarget(
            session_id=request.match_info.get("session", ""),
            token=query_value(request, "token"),
            actor_id=request.match_info.get("actor", ""),
            avatars=avatar_refs(request),
            actor_name=query_value(request, "name", MAX_NAME_LENGTH) or "actor",
        )
        peer, answer = await self.webrtc.publish(await read_offer(request), target, self._caller(request))
        return created(peer.id, answer)

    async def whep(self, request: web.Request) -> web.Response:
        offer = await read_offer(request)
        session = request.match_info["session"]
        token = query_value(request, "token")
        peer, answer = await self.webrtc.subscribe(offer, session, token, avatar_refs(request), self._caller(request))
        return created(peer.id, answer)

    def _caller(self, request: web.Request) -> str:
        """Whom the request's peer counts against for the caps."""
        return self._callers.of(request.headers.get("Authorization"), request.remote or "")

    async def delete(self, request: web.Request) -> web.Response:
        await self.webrtc.get(request.match_info["peer"]).close("the peer sent DELETE")
        return web.Response(status=200)

    async def patch(self, request: web.Request) -> web.Response:
        self.webrtc.get(request.match_info["peer"])  # 404 for a peer that is gone
        raise web.HTTPMethodNotAllowed(
            "PATCH",
            ["DELETE"],
            text="trickle ICE and ICE restarts are not supported: the answer carries every candidate",
        )

    # Middleware

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._keys and request.path not in OPEN_PATHS:
            problem = authorization_problem(request.headers.get("Authorization"), self._keys)
            if problem is not None:
                raise web.HTTPUnauthorized(text=problem, headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The server's exceptions as HTTP statuses, by their kind as gRPC maps them; anything
        else is logged and becomes a 500 naming it, and the server carries on."""
        try:
            return await handler(request)
        except web.HTTPException as refusal:
            if 400 <= refusal.status < 500 and refusal.status != 401:  # 413, 415: one line
                log_rejected(f"{request.method} {request.path}", str(request.remote), refusal.reason)
            raise
        except Exception as error:
            if isinstance(error, (BadOffer, OutOfBounds)):
                log_rejected(f"{request.method} {request.path}", str(request.remote), str(error))
            code = HTTP_STATUS.get(errors.kind_of(error))
            if code is None:
                log.error("%s %s failed", request.method, request.path, exc_info=error)
                return web.Response(status=500, text=f"internal error: {error}")
            return web.Response(status=code, text=str(error))


async def read_offer(request: web.Request) -> str:
    if request.content_type != "application/sdp":
        got = request.headers.get("Content-Type", "none")[:100]
        raise web.HTTPUnsupportedMediaType(text=f"POST the SDP offer as Content-Type: application/sdp (got {got!r})")
    body = await request.read()  # 413 past client_max_size
    try:
        return body.decode("utf-8")  # SDP is UTF-8 (RFC 8866); whatever is not is no offer
    except UnicodeDecodeError:
        raise BadOffer("the SDP offer is not UTF-8 text") from None


class BadOffer(errors.Invalid):
    """A body that is not an SDP offer."""


def query_value(request: web.Request, name: str, most: int = LIMITS.string_chars) -> str:
    """A query parameter, held to the same bounds as the gRPC fields it stands for."""
    value = request.query.get(name, "")
    if len(value) > most:
        raise OutOfBounds(f"?{name}= is {len(value)} characters long; at most {most}")
    return value


class RedactedAccessLogger(AbstractAccessLogger):
    """The access log without query strings: `?token=` carries a session token, which has no
    place in a log file. Method, path, status, size and time are what the log is for."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "%s %s %s %d %d %.1f ms",
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
        )


def avatar_refs(request: web.Request) -> tuple[str, ...]:
    """`?avatar=a&avatar=b` or `?avatar=a,b`: avatar ids or names, as many as gRPC allows."""
    refs = tuple(ref.strip() for value in request.query.getall("avatar", []) for ref in value.split(",") if ref.strip())
    most = LIMITS.lists["freeavatar.v1.AnimateStart.avatar_ids"]
    if len(refs) > most:
        raise OutOfBounds(f"?avatar= names {len(refs)} avatars; at most {most}")
    if any(len(ref) > LIMITS.string_chars for ref in refs):
        raise OutOfBounds(f"an ?avatar= value is longer than {LIMITS.string_chars} characters")
    return refs


def created(peer_id: str, answer: str) -> web.Response:
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"/peers/{peer_id}"},
    )


async def page(request: web.Request) -> web.Response:
    html = resources.files("freeavatar_server.transport.webrtc").joinpath("page.html").read_text()
    return web.Response(text=html, content_type="text/html")
