"""Rig frames to a WebRTC peer over its data channel: one serialized RigStreamMessage per
message, the same protobuf as the gRPC streams (each avatar's control names, then frames).

A peer that reads slowly fills the channel's send buffer; past BUFFER_LIMIT this stops
sending until the buffer drains, and the rig subscription's own policy takes over (its oldest
frames go, counted), so a slow peer never grows the server's memory nor slows anyone else.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCDataChannel

from freeavatar._proto import rig_pb2
from freeavatar_server.live.subscriptions import RigSubscription, StreamClosed

LABEL = "rig"  # the data channel a peer opens to receive rig frames
BUFFER_LIMIT = 256 * 1024  # bytes queued in the channel before sending pauses


class RigChannel:
    """Forwards `rigs` to the peer's data channel, once it has one, until `rigs` closes.
    Frames that arrive while the peer has no open channel are discarded, control names are
    kept for it. `run` returns the reason the rig stream ended."""

    def __init__(self, rigs: RigSubscription) -> None:
        self.rigs = rigs
        self.sent = 0
        self._channel: RTCDataChannel | None = None
        self._unsent_controls: list[rig_pb2.RigStreamMessage] = []
        self._drained = asyncio.Event()

    def use(self, channel: RTCDataChannel) -> None:
        channel.bufferedAmountLowThreshold = BUFFER_LIMIT // 2
        channel.on("bufferedamountlow", self._drained.set)
        channel.on("close", self._drained.set)
        self._channel = channel

    async def run(self) -> str:
        while True:
            try:
                message = await self.rigs.next()
            except StreamClosed as closed:
                return closed.reason
            channel = self._channel
            if channel is None or channel.readyState != "open":
                if message.HasField("controls"):
                    self._unsent_controls.append(message)
                continue
            while channel.bufferedAmount > BUFFER_LIMIT and channel.readyState == "open":
                self._drained.clear()
                await self._drained.wait()
            if channel.readyState == "open":
                for controls in self._unsent_controls:
                    channel.send(controls.SerializeToString())
                self._unsent_controls.clear()
                channel.send(message.SerializeToString())
                self.sent += 1
