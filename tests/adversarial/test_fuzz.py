"""Property: whatever a client sends to any method of any service, well-formed or not, the
server answers with a status that is the client's (never UNKNOWN or INTERNAL), names no Python
object, and stays up. Messages are generated from the proto descriptors, so a new field or
method is fuzzed without touching this file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from freeavatar._proto import avatar_pb2, job_pb2, stream_pb2
from tests.adversarial.conftest import PROFILE
from tests.conftest import ServerThread

SERVICES = [
    avatar_pb2.DESCRIPTOR.services_by_name["AvatarService"],
    job_pb2.DESCRIPTOR.services_by_name["JobService"],
    stream_pb2.DESCRIPTOR.services_by_name["StreamService"],
]
METHODS = {f"{s.name}.{m.name}": m for s in SERVICES for m in s.methods}
FAULTS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
OBJECT_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

_INTS = {
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
}
# Short and long strings (the bound is 128 or 256 characters), and the edge numbers: NaN,
# inf, beyond float32, the largest float32.
_TEXT = st.text(max_size=12) | st.text(min_size=250, max_size=300)
_DOUBLES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e39, -3.4e38, 3.4028234e38])


def scalars(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _DOUBLES
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-1, len(field.enum_type.values) + 1)  # and values it does not define
    return _INTS[kind]


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of `descriptor`'s type: each field set or not, lists and maps of up to 3."""
    cls = message_factory.GetMessageClass(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            values = messages(value.message_type, depth + 1) if value.message_type else scalars(value)
            fields[field.name] = st.dictionaries(scalars(key), values, max_size=3)
            continue
        if entry is not None:
            if depth >= 3:
                continue
            one = messages(entry, depth + 1)
        else:
            one = scalars(field)
        fields[field.name] = st.lists(one, max_size=3) if field.is_repeated else one
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: build(cls, values))


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif isinstance(value, list):
            if field.message_type is not None:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def call(channel: grpc.Channel, method: MethodDescriptor, bodies: list[bytes]) -> grpc.RpcError | None:
    """Send raw request bodies to `method`; the error it ended with, or None."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming and method.server_streaming:
            replies: Iterator[bytes] = channel.stream_stream(path)(iter(bodies), timeout=3)
            for _ in replies:  # a stream that got going: enough
                replies.cancel()  # type: ignore[attr-defined]
        elif method.client_streaming:
            channel.stream_unary(path)(iter(bodies), timeout=3)
        elif method.server_streaming:
            replies = channel.unary_stream(path)(bodies[0], timeout=3)
            for _ in replies:
                replies.cancel()  # type: ignore[attr-defined]
        else:
            channel.unary_unary(path)(bodies[0], timeout=3)
    except grpc.RpcError as error:
        return error
    return None


def assert_client_status(method: MethodDescriptor, error: grpc.RpcError | None) -> None:
    if error is None:
        return
    code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
    if code == grpc.StatusCode.CANCELLED:  # we cancelled a stream that was serving
        return
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        assert method.server_streaming, f"{method.name} took over 3 s"  # a stream that waits
        return
    assert code not in FAULTS, f"{method.name}: {code.name}: {details}"
    assert not OBJECT_ADDRESS.search(details), f"{method.name}: {details}"


@pytest.fixture(scope="module")
def channel(shared_server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(shared_server.address) as opened:
        yield opened


@pytest.mark.parametrize("name", sorted(METHODS))
def test_any_message_gets_a_client_status(name: str, channel: grpc.Channel) -> None:
    method = METHODS[name]

    @PROFILE
    @given(st.lists(messages(method.input_type), min_size=1, max_size=2))
    def property(requests: list[Message]) -> None:
        assert_client_status(method, call(channel, method, [r.SerializeToString() for r in requests]))

    property()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_any_bytes_get_a_client_status(name: str, channel: grpc.Channel) -> None:
    method = METHODS[name]

    @PROFILE
    @given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=2))
    def property(bodies: list[bytes]) -> None:
        assert_client_status(method, call(channel, method, bodies))

    property()
