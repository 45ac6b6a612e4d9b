"""Request bounds, in one place: how long a string, how many items in a list, which numbers,
and how many bytes a reply the server builds may hold. Shared by gRPC (every request message
is checked against them before its handler runs: `transport/grpc/requests.py`) and HTTP.

Why bounds at the edge and not in each handler: one client must not be able to break a call
for everyone else (two avatars with a 9 MB `group` made every `ListAvatars` fail), nor make
the server do unbounded work for it. A request outside the bounds is the client's error:
INVALID_ARGUMENT (HTTP 400), naming the field, with one rate-limited log line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from freeavatar.rig import FLOAT32_MAX, MAX_CONTROLS, MAX_NAME_LENGTH
from freeavatar.wire import MAX_MESSAGE_BYTES
from freeavatar_server.live.errors import Invalid

_M = TypeVar("_M", bound=Message)
_K = TypeVar("_K")
_R = TypeVar("_R")


def _frozen(**entries: int) -> Mapping[str, int]:
    return MappingProxyType({f"freeavatar.v1.{name}": value for name, value in entries.items()})


@dataclass(frozen=True)
class RequestLimits:
    """Every bound a request is held to. Per-field entries are keyed by the field's full proto
    name (`freeavatar.v1.RigSpec.name`); every other field takes the default of its kind."""

    message_bytes: int = MAX_MESSAGE_BYTES  # gRPC refuses larger messages itself
    # A reply the server assembles from many records (a page, a batch of rig vectors) stays
    # under this, so that it fits even a client still on gRPC's 4 MiB receive default.
    reply_bytes: int = 3 * 1024 * 1024
    # One batch of rig vectors is one reply, not pages: it may fill a message (less a margin
    # for framing), and the count a request may ask for follows from the rig's size.
    vectors_reply_bytes: int = MAX_MESSAGE_BYTES - 64 * 1024
    string_chars: int = 256  # ids, tokens, host names: all far shorter
    list_items: int = MAX_CONTROLS  # the longest legitimate list is a rig's values
    strings: Mapping[str, int] = field(
        default_factory=lambda: _frozen(
            **{
                "RigSpec.name": MAX_NAME_LENGTH,
                "RigControl.name": MAX_NAME_LENGTH,
                "RigControl.group": MAX_NAME_LENGTH,
                "RigControl.mirror": MAX_NAME_LENGTH,
                "CreateSessionRequest.name": MAX_NAME_LENGTH,
                "JoinSessionRequest.actor_name": MAX_NAME_LENGTH,
            }
        )
    )
    lists: Mapping[str, int] = field(
        default_factory=lambda: _frozen(
            **{
                # each binding resolves every adjustment against a rig: bounded work per join
                "JoinSessionRequest.bindings": 16,
                "RebindActorRequest.bindings": 16,
                "AnimateStart.avatar_ids": 16,
            }
        )
    )
    # Floats the upload handlers check item by item, so that one bad sample is rejected by
    # its index and does not end the whole upload (UploadSummary.rejected).
    per_item_floats: frozenset[str] = frozenset(
        {"freeavatar.v1.RenderSample.rig", "freeavatar.v1.Keyframe.rig"}
    )
    # Rejected-request log lines: at most `log_burst` per `log_interval_s`.
    log_burst: int = 10
    log_interval_s: float = 10.0


LIMITS = RequestLimits()


class OutOfBounds(Invalid):
    """A request field outside the server's bounds; the message names the field."""


class Undecodable(Invalid):
    """Bytes that are not the request message they were sent as."""


def check_request(message: Message, limits: RequestLimits = LIMITS) -> None:
    """Raise OutOfBounds naming the first field of `message` outside `limits`.

    Lengths are checked before any item is looked at, so the walk's cost is bounded by the
    limits, not by what the client sent. Only set fields are visited (`ListFields`).
    """
    _check(message, limits, message.DESCRIPTOR.name)


def _check(message: Message, limits: RequestLimits, path: str) -> None:
    for descriptor, value in message.ListFields():
        where = f"{path}.{descriptor.name}"
        if not descriptor.is_repeated:
            if descriptor.message_type is not None:
                _check(value, limits, where)
            else:
                _check_scalar(descriptor, value, limits, where)
            continue
        most = limits.lists.get(descriptor.full_name, limits.list_items)
        if len(value) > most:
            raise OutOfBounds(f"{where} has {len(value)} items; at most {most}")
        entry = descriptor.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            for key, item in value.items():
                _check_scalar(key_field, key, limits, f"{where} key")
                if value_field.message_type is not None:
                    _check(item, limits, f"{where}[{key!r}]")
                else:
                    _check_scalar(value_field, item, limits, f"{where}[{key!r}]")
        elif entry is not None:
            for index, item in enumerate(value):
                _check(item, limits, f"{where}[{index}]")
        elif descriptor.full_name in limits.per_item_floats:
            continue
        else:
            for index, item in enumerate(value):
                _check_scalar(descriptor, item, limits, f"{where}[{index}]")


_FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)


def _check_scalar(descriptor: FieldDescriptor, value: Any, limits: RequestLimits, where: str) -> None:
    kind = descriptor.type
    if kind == FieldDescriptor.TYPE_STRING:
        most = limits.strings.get(descriptor.full_name, limits.string_chars)
        if len(value) > most:
            raise OutOfBounds(f"{where} is {len(value)} characters long; at most {most}")
    elif kind in _FLOATS:
        # Every number the server computes with is float32 (rig values, adjustments): a
        # double beyond its range becomes inf there, and inf - inf is NaN.
        if not math.isfinite(value):
            raise OutOfBounds(f"{where} is not a finite number")
        if abs(value) > FLOAT32_MAX:
            raise OutOfBounds(f"{where} = {value:g} does not fit a float32")
    elif kind == FieldDescriptor.TYPE_ENUM:
        if value not in descriptor.enum_type.values_by_number:
            raise OutOfBounds(f"{where} = {value} is not a value of {descriptor.enum_type.name}")


def decode_request(parse: Callable[[bytes], _M], raw: bytes, limits: RequestLimits = LIMITS) -> _M:
    """Bytes -> the checked request message, or Undecodable / OutOfBounds."""
    try:
        message = parse(raw)
    except Exception as error:  # noqa: BLE001 - parsing is pure: any failure is the bytes'
        name = getattr(parse, "__qualname__", "the request").removesuffix(".FromString")
        reason = str(error).rpartition(": ")[2] or type(error).__name__  # no repr of the bytes
        raise Undecodable(f"the request is not a valid {name} ({reason})") from None
    if isinstance(message, Message):
        check_request(message, limits)
    return message


def byte_bounded(
    entries: Iterable[tuple[_K, _M]], most: int, budget: int = LIMITS.reply_bytes
) -> tuple[list[tuple[_K, _M]], bool]:
    """The leading (position, message) entries whose messages' encoded size fits `budget` (at
    least one), at most `most` of them; and whether any entry was left out. Pages are bounded
    by bytes as well as count. `entries` is read lazily: one past the page at most."""
    page: list[tuple[_K, _M]] = []
    used = 0
    for key, message in entries:
        size = message.ByteSize() + 8  # the field's tag and length prefix, generously
        if len(page) >= most or (page and used + size > budget):
            return page, True
        page.append((key, message))
        used += size
    return page, False


# Heavy replies (hundreds of milliseconds of CPU) run here, one at a time: off the event loop,
# and not in asyncio's default executor, whose threads every other call's store access uses;
# several heavy calls queue behind each other instead of starving those.
_HEAVY = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heavy-reply")


async def run_heavy(function: Callable[..., _R], *args: Any) -> _R:
    return await asyncio.get_running_loop().run_in_executor(_HEAVY, functools.partial(function, *args))


# The log of rejected requests: one line per rejection, rate-limited by `RateLimit`.
rejected_log = logging.getLogger("freeavatar_server.rejected")


class RateLimit(logging.Filter):
    """At most `burst` records per `interval_s`; the first record let through after some were
    dropped says how many. A client sending garbage in a loop costs a few lines, not a flood."""

    def __init__(self, burst: int, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._burst, self._interval_s, self._clock = burst, interval_s, clock
        self._window_start = -math.inf
        self._passed = 0
        self._dropped = 0
        self._lock = threading.Lock()  # HTTP and gRPC log from the loop, uploads from threads

    def reset(self) -> None:
        """A fresh window (tests: each starts from a quiet log)."""
        with self._lock:
            self._window_start, self._passed, self._dropped = -math.inf, 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self._interval_s:
                self._window_start, self._passed = now, 0
            if self._passed >= self._burst:
                self._dropped += 1
                return False
            self._passed += 1
            dropped, self._dropped = self._dropped, 0
        if dropped:
            record.msg, record.args = f"{record.getMessage()} ({dropped} more not logged)", ()
        return True


rejected_rate = RateLimit(LIMITS.log_burst, LIMITS.log_interval_s)
rejected_log.addFilter(rejected_rate)


def log_rejected(where: str, peer: str, reason: str) -> None:
    """The one log line of a rejected request (rate-limited): no traceback, as the client
    erred, and no request bytes, only the reason (itself bounded)."""
    rejected_log.warning("rejected %s from %s: %s", where, peer, reason[:300])
