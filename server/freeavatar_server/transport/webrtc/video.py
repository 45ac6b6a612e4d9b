"""A WebRTC peer's video, from RTP packets to the RGB frames the pipeline reads.

aiortc's receiver still does the transport work (SRTP, reordering, NACK, RTX, depayloading,
receiver reports); from complete encoded frames on, this module takes over, for three reasons:

- Latency. aiortc's jitter buffer releases a frame when the next frame's first packet
  arrives, one frame interval late (33 ms at 30 fps). `FrameAssembler` releases it on its last
  packet, the one with the RTP marker bit (RFC 7741 for VP8, RFC 6184 for H.264), and falls
  back to the next frame's first packet when a sender leaves the marker out.
- Bounded cost. aiortc decodes every frame on a thread of its own per peer and queues the
  results without a bound, so a sender faster than its reader grows memory. Here frames wait
  encoded, and are decoded on a thread of the server process when the pipeline takes one: all of
  them, since each refers to the one before, but only the newest becomes RGB. A backlog over
  MAX_BACKLOG (the pipeline has taken nothing for about two seconds) is dropped whole and the
  sender is asked for a keyframe (RTCP PLI) to start again from: frames are lost, not memory.
- Capture times on the sender's clock, as the rig frame contract says: an RTP timestamp maps
  to the sender's wall clock through its RTCP sender reports (RFC 3550 section 6.4.1).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtcpSrPacket, RtpPacket

from freeavatar_server.live.pipeline import MAX_FRAME_PIXELS, BadFrame, FrameSkipped, StageStats
from freeavatar_server.store import now_us

log = logging.getLogger(__name__)

SUPPORTED_CODECS = ("VP8", "H264")
MAX_BACKLOG = 60  # encoded frames waiting for the pipeline: 2 s at 30 fps
KEYFRAME_RETRY_S = 1.0  # ask again while still waiting for a keyframe
MAX_CLOCK_OFFSET_US = 60_000_000  # a sender clock further off than this is not believed
NTP_TO_UNIX_S = 2_208_988_800


@dataclass(frozen=True)
class VideoFrameRef:
    """The pipeline's handle on one frame of the video (pipeline.Decodable)."""

    video: IncomingVideo
    index: int
    capture_time_us: int

    def decode(self) -> np.ndarray:
        return self.video.decode_through(self.index)


class IncomingVideo:
    """One peer's video track. `add` runs on the event loop (from aiortc's RTP handling);
    `decode_through` on a thread of the server process, one call at a time per actor."""

    def __init__(
        self,
        codecs: dict[int, RTCRtpCodecParameters],
        submit: Callable[[VideoFrameRef], None],
        drops: StageStats,
    ) -> None:
        self._codecs = codecs  # by payload type, as negotiated
        self._submit = submit
        self._drops = drops
        self.clock = SenderClock()
        self.frames = 0  # complete frames received
        self._lock = threading.Lock()  # the backlog and decoder, shared with the pool
        self._backlog: deque[tuple[int, JitterFrame]] = deque()
        self._index = 0
        self._codec: RTCRtpCodecParameters | None = None
        self._decoder = None
        self._awaiting_keyframe = True  # a decoder starts from a keyframe
        self._keyframe_asked_at: float | None = None
        self._unreported_drops = 0  # the stats belong to the event loop: counted there

    def add(self, frame: JitterFrame, payload_type: int) -> None:
        """A complete encoded frame, straight from the assembler."""
        codec = self._codecs.get(payload_type)
        if codec is None:  # aiortc drops packets of unknown payload types before this
            return
        self.frames += 1
        keyframe = is_keyframe(codec.name, frame.data)
        with self._lock:
            self._drops.dropped += self._unreported_drops
            self._unreported_drops = 0
            if codec is not self._codec:  # the first frame, or the sender switched codecs
                self._codec, self._decoder = codec, get_decoder(codec)
                self._restart_locked()
            if self._awaiting_keyframe and not keyframe:
                self._drops.dropped += 1
                return
            self._awaiting_keyframe = False
            if len(self._backlog) >= MAX_BACKLOG:
                self._drops.dropped += len(self._backlog) + 1
                self._restart_locked()
                return
            self._index += 1
            self._backlog.append((self._index, frame))
            index = self._index
        self._submit(VideoFrameRef(self, index, self.clock.capture_time_us(frame.timestamp)))

    @property
    def waiting(self) -> int:
        """Encoded frames the pipeline has not taken yet."""
        return len(self._backlog)

    def keyframe_wanted(self) -> bool:
        """Whether to send the sender a picture loss indication now (checked per packet)."""
        with self._lock:
            if not self._awaiting_keyframe or self._codec is None:
                return False
            now = time.monotonic()
            if self._keyframe_asked_at is not None and now - self._keyframe_asked_at < KEYFRAME_RETRY_S:
                return False
            self._keyframe_asked_at = now
            return True

    def decode_through(self, index: int) -> np.ndarray:
        """Decode every waiting frame up to `index`; the last one, as RGB."""
        with self._lock:
            frames = []
            while self._backlog and self._backlog[0][0] <= index:
                frames.append(self._backlog.popleft()[1])
            decoder = self._decoder
        if not frames or decoder is None:
            raise FrameSkipped  # dropped since it was submitted
        latest = None
        for frame in frames:
            try:
                decoded = decoder.decode(frame)
            except av.FFmpegError as error:
                log.warning("video frame does not decode (%s): waiting for a keyframe", error)
                with self._lock:
                    self._unreported_drops += len(self._backlog)
                    self._restart_locked()
                raise FrameSkipped from None
            if decoded:
                latest = decoded[-1]
        if latest is None:
            raise FrameSkipped
        if latest.width * latest.height > MAX_FRAME_PIXELS:
            raise BadFrame(f"video of {latest.width}x{latest.height} is over the {MAX_FRAME_PIXELS}-pixel limit")
        return latest.to_ndarray(format="rgb24")

    def _restart_locked(self) -> None:
        """Drop the backlog and wait for a keyframe (which `keyframe_wanted` asks for)."""
        self._backlog.clear()
        self._awaiting_keyframe = True
        self._keyframe_asked_at = None


class SenderClock:
    """RTP timestamps -> the sender's wall clock (microseconds since the Unix epoch), through
    its recent RTCP sender reports; before the first report (or from a sender whose clock is
    over a minute off ours), the server's clock when the frame was complete.

    A report pairs an RTP timestamp with a wall-clock time, which some senders take when the
    frame left rather than when it was captured (aiortc does), late by however long encoding
    took: of the last few reports, the earliest mapping is the closest to capture."""

    REPORTS = 8  # about 8 s of them: short enough that clock drift does not build up

    def __init__(self, clock_rate: int = 90_000) -> None:
        self._clock_rate = clock_rate
        self._reports: deque[tuple[int, int]] = deque(maxlen=self.REPORTS)  # (RTP timestamp, sender us)

    def report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        seconds, fraction = ntp_timestamp >> 32, ntp_timestamp & 0xFFFFFFFF
        sender_us = (seconds - NTP_TO_UNIX_S) * 1_000_000 + (fraction * 1_000_000 >> 32)
        if ntp_timestamp and abs(sender_us - now_us()) < MAX_CLOCK_OFFSET_US:
            self._reports.append((rtp_timestamp, sender_us))

    def capture_time_us(self, rtp_timestamp: int) -> int:
        if not self._reports:
            return now_us()
        return min(
            reported_us + _ticks_between(reported_rtp, rtp_timestamp) * 1_000_000 // self._clock_rate
            for reported_rtp, reported_us in self._reports
        )


def _ticks_between(earlier: int, later: int) -> int:
    """RTP timestamp difference, signed, across the 32-bit wrap."""
    return (later - earlier + 2**31) % 2**32 - 2**31


class FrameAssembler(JitterBuffer):
    """aiortc's jitter buffer (reordering, loss, capacity), releasing each frame on its last
    packet to an IncomingVideo rather than to aiortc's decoder thread."""

    def __init__(self, video: IncomingVideo, on_error: Callable[[BaseException], None]) -> None:
        super().__init__(capacity=512, is_video=True)
        self._video = video
        self._on_error = on_error

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        picture_lost, _ = super().add(packet)  # calls _remove_frame, which hands frames on
        return picture_lost or self._video.keyframe_wanted(), None

    def _remove_frame(self, sequence_number: int) -> None:
        while (complete := self._next_frame()) is not None:
            try:
                self._video.add(*complete)
            except Exception as error:  # raised into aiortc, it would only log a warning
                self._on_error(error)

    def _next_frame(self) -> tuple[JitterFrame, int] | None:
        """The frame at the head of the buffer, if all its packets are in."""
        if self._origin is None:
            return None
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None:
                return None
            if packets and packet.timestamp != packets[0].timestamp:
                break  # the next frame began and this one had no marker: complete all the same
            packets.append(packet)
            if packet.marker:
                break
        else:
            return None
        self.remove(len(packets))
        data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]  # depayloaded by aiortc
        return JitterFrame(data=data, timestamp=packets[0].timestamp), packets[0].payload_type


def attach(receiver: RTCRtpReceiver, video: IncomingVideo, on_error: Callable[[BaseException], None]) -> None:
    """Route a receiver's complete frames to `video` and its sender reports to `video.clock`;
    `on_error` hears of anything that goes wrong on the way.

    aiortc has no hook for either: this replaces the receiver's jitter buffer and wraps its
    RTCP handler, on this one receiver. Call before media flows (after setRemoteDescription).
    """
    if not hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
        raise RuntimeError("this aiortc version's RTCRtpReceiver has no jitter buffer to replace")
    receiver._RTCRtpReceiver__jitter_buffer = FrameAssembler(video, on_error)  # type: ignore[attr-defined]
    handle_rtcp = receiver._handle_rtcp_packet

    async def handle_rtcp_packet(packet: object) -> None:
        if isinstance(packet, RtcpSrPacket):
            video.clock.report(packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp)
        await handle_rtcp(packet)

    receiver._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]


def is_keyframe(codec_name: str, data: bytes) -> bool:
    """Whether a depayloaded frame can start a decoder: a VP8 key frame (RFC 6386 9.1: the frame
    tag's low bit is 0), or H.264 with an IDR slice (NAL type 5)."""
    if not data:
        return False
    if codec_name == "VP8":
        return data[0] & 0x01 == 0
    if codec_name == "H264":  # aiortc depayloads to Annex B: NAL units after 00 00 01 start codes
        return any(nal and nal[0] & 0x1F == 5 for nal in data.split(b"\x00\x00\x01")[1:])
    return False
