"""ICE for the server's WebRTC peers: which addresses to offer, and whether the peer is still
there.

aiortc takes both from aioice, which offers every interface but loopback, with no option to
choose (aiortc/aioice#2), and declares a peer gone only when RFC 7675 consent has failed for
30 s. A server bound to 127.0.0.1 must offer 127.0.0.1 and nothing else, and a WHIP sender that
vanished (OBS crashed, the laptop closed) should free its actor well before that. Both hooks
work on one aioice `Connection` at a time and reach only into it: nothing process-wide changes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from aioice import Connection
from aiortc import RTCConfiguration, RTCPeerConnection


def peer_connection() -> RTCPeerConnection:
    """A peer connection with no STUN server: aiortc's default asks a public one and waits
    seconds for it, and the server's own addresses are what its peers reach."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def ice_connections(pc: RTCPeerConnection) -> Iterator[Connection]:
    """The aioice connections under a peer connection (one when its media are bundled)."""
    seen: set[int] = set()
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        connection = dtls.transport.iceGatherer._connection
        if id(connection) not in seen:
            seen.add(id(connection))
            yield connection


def gather_on(pc: RTCPeerConnection, hosts: tuple[str, ...] | None) -> None:
    """Offer host candidates on `hosts` only (None: aioice's choice, every interface but
    loopback). Call after the transceivers and data channels exist, before
    setLocalDescription, which gathers."""
    if hosts is None:
        return
    for connection in ice_connections(pc):
        connection.gather_candidates = _gather_on(connection, hosts)


def _gather_on(connection: Connection, hosts: tuple[str, ...]) -> Any:
    async def gather_candidates() -> None:
        # aioice's own gather_candidates, with our addresses for its interface scan.
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        for component in sorted(connection._components):
            connection._local_candidates += await connection.get_component_candidates(component, list(hosts))
        connection._local_candidates_end = True

    return gather_candidates


class LastHeard:
    """When anything (a STUN check, DTLS, RTP, RTCP, SCTP) last arrived from the peer."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.at = time.monotonic()
        for connection in ice_connections(pc):
            self._tap(connection, "data_received")
            self._tap(connection, "request_received")

    def silent_for(self) -> float:
        return time.monotonic() - self.at

    def _tap(self, connection: Connection, method: str) -> None:
        received = getattr(connection, method)

        def heard(*args: Any) -> Any:
            self.at = time.monotonic()
            return received(*args)

        setattr(connection, method, heard)
