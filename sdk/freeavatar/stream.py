"""Live streams at the SDK boundary: rig frames, the sessions that carry them, actor frames."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

import grpc
import numpy as np

from freeavatar._proto import rig_pb2, stream_pb2
from freeavatar.errors import from_rpc_error
from freeavatar.outputs import EngineOutput

_T = TypeVar("_T")


@dataclass(frozen=True)
class AvatarControls:
    avatar_id: str
    avatar_name: str
    control_names: tuple[str, ...]
    arkit_aliases: tuple[str, ...]


@dataclass(frozen=True)
class RigFrame:
    avatar_id: str
    session_id: str
    actor_id: str
    sequence: int
    capture_time_us: int  # the source frame's capture time (the sender's clock)
    emit_time_us: int  # when the server emitted it
    values: np.ndarray  # float32, in rig-spec order
    face_present: bool
    confidence: float
    # yaw, pitch, roll in degrees: +yaw towards the image right, +pitch up, +roll clockwise
    head_pose: tuple[float, float, float]
    controls: AvatarControls | None = None

    def as_dict(self) -> dict[str, float]:
        """{control name: value}."""
        if self.controls is None:
            raise ValueError("this stream has not named the avatar's controls")
        return dict(zip(self.controls.control_names, self.values.tolist(), strict=True))

    @classmethod
    def from_proto(cls, msg: rig_pb2.RigFrame, controls: AvatarControls | None) -> RigFrame:
        return cls(
            avatar_id=msg.avatar_id,
            session_id=msg.session_id,
            actor_id=msg.actor_id,
            sequence=msg.sequence,
            capture_time_us=msg.capture_time_us,
            emit_time_us=msg.emit_time_us,
            values=np.array(msg.values, dtype=np.float32),
            face_present=msg.face_present,
            confidence=msg.confidence,
            head_pose=(msg.head_pose.yaw, msg.head_pose.pitch, msg.head_pose.roll),
            controls=controls,
        )


class ExpressionReader(Enum):
    """What reads the actor's face for an avatar's controls."""

    # ARKit-aliased controls: blendshapes (but those the real-face model never moves, cheekPuff,
    # cheekSquint, noseSneer: the animator where the avatar has one); others: the animator
    AUTO = stream_pb2.EXPRESSION_READER_AUTO
    ANIMATOR = stream_pb2.EXPRESSION_READER_ANIMATOR  # every control from the animator
    BLENDSHAPES = stream_pb2.EXPRESSION_READER_BLENDSHAPES  # aliased controls only, no animator


@dataclass(frozen=True)
class Actor:
    id: str
    name: str
    avatar_ids: tuple[str, ...]
    streaming: bool
    readers: tuple[ExpressionReader, ...] = ()  # one per avatar, in avatar_ids order

    @classmethod
    def from_proto(cls, msg: stream_pb2.Actor) -> Actor:
        readers = tuple(ExpressionReader(b.reader) for b in msg.bindings)
        return cls(msg.id, msg.name, tuple(b.avatar_id for b in msg.bindings), msg.streaming, readers)


@dataclass(frozen=True)
class Session:
    id: str
    name: str
    token: str  # only from create_session; needed to join or subscribe on servers with API keys
    actors: tuple[Actor, ...] = field(default_factory=tuple)
    subscriber_count: int = 0
    outputs: tuple[EngineOutput, ...] = field(default_factory=tuple)  # with their counters

    @classmethod
    def from_proto(cls, msg: stream_pb2.Session) -> Session:
        return cls(
            msg.id,
            msg.name,
            msg.token,
            tuple(Actor.from_proto(a) for a in msg.actors),
            msg.subscriber_count,
            tuple(EngineOutput.from_proto(o) for o in msg.outputs),
        )


@dataclass(frozen=True)
class ActorFrame:
    """One frame of the actor's video: encoded JPEG/PNG bytes, or an RGB array."""

    image: bytes | np.ndarray
    capture_time_us: int = 0  # 0: stamped when sent

    def to_proto(self) -> stream_pb2.ActorFrame:
        stamp = self.capture_time_us or time.time_ns() // 1000
        if isinstance(self.image, np.ndarray):
            image = np.ascontiguousarray(self.image, dtype=np.uint8)
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"an RGB frame must be (height, width, 3), got {image.shape}")
            return stream_pb2.ActorFrame(
                data=image.tobytes(),
                format=stream_pb2.IMAGE_FORMAT_RGB24,
                width=image.shape[1],
                height=image.shape[0],
                capture_time_us=stamp,
            )
        data = bytes(self.image)
        image_format = stream_pb2.IMAGE_FORMAT_PNG if data[:4] == b"\x89PNG" else stream_pb2.IMAGE_FORMAT_JPEG
        return stream_pb2.ActorFrame(data=data, format=image_format, capture_time_us=stamp)


class RequestFeed(Generic[_T]):
    """A call's request stream that keeps what it raised.

    grpc.aio swallows an exception from a request iterator: it logs it at debug level and
    cancels the call, so the caller would see a bare asyncio.CancelledError instead of, say,
    the camera's error. `reraise` gives the caller the real one.
    """

    def __init__(self, requests: AsyncIterator[_T]) -> None:
        self._requests = requests
        self.error: Exception | None = None

    def __aiter__(self) -> RequestFeed[_T]:
        return self

    async def __anext__(self) -> _T:
        try:
            return await anext(self._requests)
        except StopAsyncIteration:
            raise
        except Exception as error:
            self.error = error
            raise

    def reraise(self) -> None:
        """Call while handling the call's CancelledError: raise what the requests raised, if
        that is why the call was cancelled (not the caller's own task being cancelled)."""
        task = asyncio.current_task()
        if self.error is not None and not (task is not None and task.cancelling()):
            raise self.error from None  # its traceback still shows where the caller's code raised


class RigStream:
    """Rig frames of an animate or subscribe call, as an async iterator; `aclose()` ends it.

    Each avatar's control names arrive once, before its first frame; `controls` keeps them and
    every RigFrame carries its avatar's. If the animate call's frames iterator raises, iterating
    raises that exception.

    Iteration stops quietly only when the stream ran its course (the animate call's frames
    ran out, or `aclose()`); a stream the server cuts off raises StreamEnded, whose `reason`
    says why: SERVER_SHUTDOWN, SESSION_CLOSED, ACTOR_LEFT or ACTOR_FAILED.
    """

    def __init__(self, call: Any, requests: RequestFeed[Any] | None = None) -> None:
        self._call = call
        self._requests = requests
        self.controls: dict[str, AvatarControls] = {}
        self._received: deque[rig_pb2.RigFrame] = deque()  # frames read, not yet yielded

    def __aiter__(self) -> RigStream:
        return self

    async def __anext__(self) -> RigFrame:
        while True:
            if self._received:
                frame = self._received.popleft()
                return RigFrame.from_proto(frame, self.controls.get(frame.avatar_id))
            try:
                message = await self._call.read()
            except asyncio.CancelledError:
                if self._requests is not None:
                    self._requests.reraise()
                raise
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.CANCELLED and self._call.cancelled():
                    raise StopAsyncIteration from None
                raise from_rpc_error(error) from None
            if message is grpc.aio.EOF:
                raise StopAsyncIteration
            if message.HasField("controls"):
                c = message.controls
                self.controls[c.avatar_id] = AvatarControls(
                    c.avatar_id, c.avatar_name, tuple(c.control_names), tuple(c.arkit_aliases)
                )
            elif message.HasField("frames"):  # a batched stream: one source frame, every avatar
                self._received.extend(message.frames.frames)
            else:
                self._received.append(message.frame)

    async def aclose(self) -> None:
        self._call.cancel()
