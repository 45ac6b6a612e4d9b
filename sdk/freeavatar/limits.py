"""Limits the server and the SDK share."""

from __future__ import annotations

# The largest gRPC message either side takes: a render sample, keyframe or frame is one message
# (images included). The SDK checks uploads against it item by item, since a message over it
# makes gRPC fail the whole call before the server sees the item.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

STREAM_END_KEY = "freeavatar-stream-end"  # trailers of a stream the server ended: a StreamEndReason
