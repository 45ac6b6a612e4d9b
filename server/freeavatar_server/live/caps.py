"""Caps on what one caller may hold open at once: sessions, streams, WebRTC peers.

A caller is an API key on a server with keys, or a client address without them (transport/auth.py
says which). Without caps one caller could open peers until the analysis workers drown and
every other caller's stream stutters; with them it gets RESOURCE_EXHAUSTED (HTTP 429) naming
the cap and the flag that sets it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from freeavatar_server.live.errors import Exhausted


@dataclass(frozen=True)
class Caps:
    """Per caller; 0 means no cap."""

    sessions: int = 64  # sessions made with CreateSession and not closed
    streams: int = 64  # Animate and Subscribe calls open at once
    peers: int = 16  # WebRTC peers (WHIP and WHEP) connected at once


class CapReached(Exhausted):
    def __init__(self, caller: str, what: str, cap: int, flag: str) -> None:
        super().__init__(
            f"{caller} already has {cap} {what} open, its cap: end one first "
            f"(the server's operator sets the cap with {flag})"
        )


class Tally:
    """How many of one kind of thing each caller holds, kept under a cap."""

    def __init__(self, what: str, cap: int, flag: str) -> None:
        self.what = what  # plural noun, for messages: "sessions"
        self.cap = cap  # 0: no cap
        self.flag = flag  # the CLI flag that sets it, for messages
        self._held: Counter[str] = Counter()

    def take(self, caller: str) -> Callable[..., None]:
        """Count one more for `caller`, or CapReached; returns the idempotent release (it
        ignores arguments, so it can be a done callback)."""
        if self.cap and self._held[caller] >= self.cap:
            raise CapReached(caller, self.what, self.cap, self.flag)
        self._held[caller] += 1
        released = False

        def release(*_: object) -> None:
            nonlocal released
            if not released:
                released = True
                self._held[caller] -= 1
                if self._held[caller] <= 0:
                    del self._held[caller]

        return release

    def held(self, caller: str) -> int:
        return self._held[caller]
