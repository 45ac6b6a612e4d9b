"""The one table of what can go wrong, by kind, for every transport to map.

Each domain exception derives from one of these kinds; a transport turns the kind into its own
status once (gRPC in `transport/grpc/status.py`, HTTP in `transport/webrtc/http.py`), so a new
error needs no registration anywhere: choosing its base class is the whole mapping.
"""

from __future__ import annotations

from freeavatar.rig import InvalidRigSpec


class Invalid(ValueError):
    """The request or its input is wrong; the message names what."""


class NotFound(LookupError):
    """What the request names does not exist (any more)."""


class Conflict(Exception):
    """The request clashes with what exists (a name taken)."""


class Forbidden(PermissionError):
    """The caller may not do this (a wrong session token)."""


class NotReady(Exception):
    """The request is valid but the server's state does not allow it yet (an avatar with no
    animator, an actor already streaming)."""


class Exhausted(Exception):
    """A limit is reached (outputs per session)."""


class Unavailable(Exception):
    """Try again: the server could not serve this now (an analysis worker died)."""


class Failed(Exception):
    """Something of the server's own failed (a model that does not run); the message says what."""


KINDS: tuple[type[Exception], ...] = (Invalid, NotFound, Conflict, Forbidden, NotReady, Exhausted, Unavailable, Failed)

# Errors raised by code that cannot derive from our kinds (the SDK's rig-spec validation).
_FOREIGN: dict[type[Exception], type[Exception]] = {InvalidRigSpec: Invalid}


def kind_of(error: BaseException) -> type[Exception] | None:
    """The kind an error is, or None for an unexpected one (a bug: transports log it)."""
    for kind in KINDS:
        if isinstance(error, kind):
            return kind
    for cls, kind in _FOREIGN.items():
        if isinstance(error, cls):
            return kind
    return None


class BadRequest(Invalid):
    """A request field the server cannot act on; the message names the field."""


def require_id(value: str, field: str) -> str:
    if not value:
        raise BadRequest(f"{field} is empty")
    return value
