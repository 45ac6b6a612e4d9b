import asyncio

import numpy as np
import pytest

from freeavatar._proto import rig_pb2, stream_pb2
from freeavatar.rig import RigControl, RigSpec
from freeavatar_server.live.sessions import (
    BadBinding,
    BadSessionToken,
    Binding,
    SessionNotFound,
    SessionRegistry,
)
from freeavatar_server.live.subscriptions import RigSubscription, input_ended

SPEC = RigSpec("robot", (RigControl("jaw"), RigControl("brow", -1, 1)))


def controls(avatar_id: str) -> rig_pb2.AvatarControls:
    return rig_pb2.AvatarControls(avatar_id=avatar_id, control_names=["jaw", "brow"])


def frame(avatar_id: str, sequence: int) -> rig_pb2.RigFrame:
    return rig_pb2.RigFrame(avatar_id=avatar_id, sequence=sequence, values=[0.5, 0.0])


async def drain(subscription: RigSubscription) -> list[rig_pb2.RigStreamMessage]:
    subscription.close(input_ended("done"))
    return [m async for m in subscription]


async def test_controls_come_first_and_once_per_avatar() -> None:
    subscription = RigSubscription()
    for sequence in range(3):
        subscription.offer([(controls("a"), frame("a", sequence)), (controls("b"), frame("b", sequence))])
    messages = await drain(subscription)
    kinds = [(m.WhichOneof("kind"), m.controls.avatar_id or m.frame.avatar_id) for m in messages]
    assert kinds[:2] == [("controls", "a"), ("controls", "b")]
    assert [k for k, _ in kinds[2:]] == ["frame"] * 6


async def test_slow_reader_loses_oldest_frames_never_announcements() -> None:
    subscription = RigSubscription(capacity=4)
    for sequence in range(10):
        subscription.offer([(controls("a"), frame("a", sequence))])
    subscription.offer([(controls("b"), frame("b", 0))])
    messages = await drain(subscription)
    assert [m.controls.avatar_id for m in messages[:2]] == ["a", "b"]
    assert [m.frame.sequence for m in messages[2:]] == [7, 8, 9, 0]
    assert subscription.dropped == 7


async def test_filter_and_wakeup() -> None:
    subscription = RigSubscription(frozenset({"b"}))
    waiting = asyncio.create_task(subscription.next())
    await asyncio.sleep(0)
    subscription.offer([(controls("a"), frame("a", 0))])
    await asyncio.sleep(0)
    assert not waiting.done()
    subscription.offer([(controls("b"), frame("b", 0))])
    assert (await asyncio.wait_for(waiting, 1)).controls.avatar_id == "b"


async def test_a_batched_subscription_sends_one_message_per_source_frame() -> None:
    batched, single = RigSubscription(frozenset({"a", "c"}), batched=True), RigSubscription(frozenset({"a", "c"}))
    for sequence in range(3):
        frames = [(controls(x), frame(x, sequence)) for x in "abc"]
        batched.offer(frames)
        single.offer(frames)
    messages = await drain(batched)
    assert [m.controls.avatar_id for m in messages[:2]] == ["a", "c"]  # announced as before
    assert [m.WhichOneof("kind") for m in messages[2:]] == ["frames"] * 3
    unpacked = [f for m in messages[2:] for f in m.frames.frames]
    assert unpacked == [m.frame for m in (await drain(single))[2:]]  # the same frames, filtered


async def test_a_slow_batched_reader_loses_whole_source_frames_and_counts_each_rig_frame() -> None:
    subscription = RigSubscription(capacity=2, batched=True)
    for sequence in range(5):
        subscription.offer([(controls(x), frame(x, sequence)) for x in "ab"])
    messages = await drain(subscription)
    assert [[f.sequence for f in m.frames.frames] for m in messages[2:]] == [[3, 3], [4, 4]]
    assert subscription.dropped == 6  # three source frames of two avatars


def test_binding_resolves_adjustments_against_the_rig() -> None:
    message = stream_pb2.AvatarBinding(
        avatar_id="x",
        adjustments={"brow": stream_pb2.ControlAdjustment(gain=2.0, offset=0.1, clamp_max=0.5)},
    )
    binding = Binding.resolve(message, SPEC)
    out = binding.adjust(np.array([0.5, 0.4], np.float32))
    assert out == pytest.approx([0.5, 0.5])  # jaw untouched, brow 0.9 clamped to 0.5
    assert binding.controls.control_names == ["jaw", "brow"]
    assert set(binding.to_proto().adjustments) == {"brow"}
    with pytest.raises(BadBinding, match="no control 'nose'"):
        Binding.resolve(
            stream_pb2.AvatarBinding(avatar_id="x", adjustments={"nose": stream_pb2.ControlAdjustment()}),
            SPEC,
        )


async def test_sessions_isolate_and_check_tokens() -> None:
    registry = SessionRegistry(require_tokens=True)
    first, second = registry.create("one"), registry.create("two")
    with pytest.raises(BadSessionToken):
        registry.enter(first.id, "")
    assert registry.enter(first.id, first.token) is first
    binding = Binding.resolve(stream_pb2.AvatarBinding(avatar_id="x"), SPEC)
    one, two = first.subscribe(), second.subscribe()
    first.publish([(binding, frame("x", 1))])
    assert (await one.next()).controls.avatar_id == "x"
    assert two.dropped == 0 and not await _has_message(two)
    registry.close(first.id)
    assert [m.frame.sequence for m in [await one.next()]] == [1]
    with pytest.raises(SessionNotFound):
        registry.get(first.id)
    assert SessionRegistry(require_tokens=False).create("open").token  # tokens exist, unchecked


async def _has_message(subscription: RigSubscription) -> bool:
    try:
        await asyncio.wait_for(subscription.next(), 0.05)
    except TimeoutError:
        return False
    return True
