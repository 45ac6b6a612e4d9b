"""What both ends of the wire agree on, in one place: the server and the SDK import it."""

from __future__ import annotations

# The largest gRPC message either side sends or accepts. Render samples and actor frames are
# images; every reply the server builds (a page, a batch of rig vectors) is bounded below it.
# gRPC's own default receive limit is 4 MiB: a client left at that default fails on replies
# the server is allowed to send, so the SDK's channels take this value too.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)

STREAM_END_KEY = "freeavatar-stream-end"  # trailers of a stream the server ended: a StreamEndReason
