"""The server's one NATS connection: connected at start (or the server does not start), then
reconnecting by itself whenever NATS goes away; `problem` says what is wrong meanwhile."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.errors import SlowConsumerError

log = logging.getLogger(__name__)

START_ATTEMPTS = 3


class ClusterUnreachable(Exception):
    """NATS could not be reached at start; the message names it and what to check."""


@dataclass(frozen=True)
class NatsSettings:
    url: str  # nats://HOST:4222, never with credentials in it
    name: str  # this server, as NATS monitoring shows the connection
    credentials_file: Path | None = None
    user: str | None = None
    password: str | None = None


class ClusterBus:
    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self.nc: Client | None = None
        self.problem: str | None = None  # why NATS is unusable now; None while connected
        self.slow_consumer_drops = 0  # messages NATS dropped because a subscription fell behind
        self._closing = False
        self._started = False
        self._last_error: Exception | None = None

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def start(self) -> Client:
        settings = self.settings
        try:
            self.nc = await nats.connect(
                servers=[settings.url],
                name=settings.name,
                no_echo=True,  # a server hears its own frames in-process, not back from NATS
                connect_timeout=2,
                # a few tries at start, then refuse to start (an address mistyped says so at
                # once); once connected, reconnect forever, below
                max_reconnect_attempts=START_ATTEMPTS,
                reconnect_time_wait=0.5,
                user_credentials=str(settings.credentials_file) if settings.credentials_file else None,
                user=settings.user,
                password=settings.password,
                error_cb=self._error,
                disconnected_cb=self._disconnected,
                reconnected_cb=self._reconnected,
                allow_reconnect=True,
            )
        except Exception as error:  # nats-py raises its own, OSError or TimeoutError by cause
            cause = self._last_error or error
            raise ClusterUnreachable(
                f"cannot reach NATS at {settings.url} ({type(cause).__name__}: {cause}): check that "
                "nats-server runs there and lets this server in"
            ) from None
        # NATS comes back after an outage: so does this server (nats-py keeps its options here)
        self.nc.options["max_reconnect_attempts"] = -1
        self._started = True
        return self.nc

    async def stop(self) -> None:
        self._closing = True  # closing disconnects: that is no problem to report
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
        self.nc = None

    async def _error(self, error: Exception) -> None:
        if isinstance(error, SlowConsumerError):
            self.slow_consumer_drops += 1  # counted, like every other drop on the live path
            return
        if not self._started:  # start's own error says it, once
            self._last_error = error
            return
        log.warning("NATS at %s: %s", self.settings.url, error)

    async def _disconnected(self) -> None:
        if self._closing:
            return
        self.problem = f"lost the connection to NATS at {self.settings.url}; reconnecting"
        log.error("%s", self.problem)

    async def _reconnected(self) -> None:
        self.problem = None
        log.info("reconnected to NATS at %s", self.settings.url)
