"""Live sessions (a virtual meeting): actors bound to avatars, and subscribers to their rigs.

Sessions live in memory: they are the state of running streams, not records to keep. In a
cluster a `SessionLink` (cluster/ implements it) shares them with the other servers: it keeps
each shared session's record and carries its rig frames to the servers that have subscribers.
"""

from __future__ import annotations

import hmac
import itertools
import math
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from freeavatar._proto import rig_pb2, stream_pb2
from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar.rig import RigSpec
from freeavatar_server.inference.face_landmarker import UNREAD_BLENDSHAPES
from freeavatar_server.live.caps import Tally
from freeavatar_server.live.errors import Forbidden, Invalid, NotFound
from freeavatar_server.live.smoothing import ControlAdjustments
from freeavatar_server.live.subscriptions import (
    DEFAULT_CAPACITY,
    RigSubscription,
    StreamEnd,
    server_shutdown,
    session_closed,
)
from freeavatar_server.store import now_us

# One source frame's rig frames, each with its avatar's control names (told to new subscribers).
Offered = Sequence[tuple[rig_pb2.AvatarControls, rig_pb2.RigFrame]]
ARKIT_INDEX = {name: i for i, name in enumerate(ARKIT_BLENDSHAPES)}


class SessionNotFound(NotFound):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session with id {session_id!r}")


class ActorNotFound(NotFound):
    def __init__(self, session_id: str, actor_id: str) -> None:
        super().__init__(f"session {session_id!r} has no actor {actor_id!r}")


class BadSessionToken(Forbidden):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"the session token for {session_id!r} is missing or wrong")


class BadBinding(Invalid):
    """An avatar binding whose adjustments do not fit the avatar's rig."""


@dataclass(frozen=True)
class BlendshapeDrive:
    """The controls of a rig that carry an ARKit alias, and where each reads its blendshape."""

    controls: np.ndarray  # (k,) int: positions in the rig
    shapes: np.ndarray  # (k,) int: positions in ARKIT_BLENDSHAPES
    low: np.ndarray  # (k,) float32: a blendshape's 0 ...
    span: np.ndarray  # (k,) float32: ... and 1, in the control's own range
    # (k,) bool: the front end moves the control's blendshape (it is not in UNREAD_BLENDSHAPES,
    # whose controls keep what they are given: the animator's under AUTO)
    moved: np.ndarray

    @classmethod
    def of(cls, spec: RigSpec) -> BlendshapeDrive:
        aliased = [(i, c) for i, c in enumerate(spec.controls) if c.arkit_alias]
        # a blendshape is 0 at rest: the control rests at its default (where the avatar goes when
        # no face is seen) and rises from there to its maximum
        low = np.array([min(max(c.default, c.min), c.max) for _, c in aliased], np.float32)
        high = np.array([c.max for _, c in aliased], np.float32)
        return cls(
            np.array([i for i, _ in aliased], np.int64),
            np.array([ARKIT_INDEX[c.arkit_alias] for _, c in aliased], np.int64),
            low,
            high - low,
            np.array([c.arkit_alias not in UNREAD_BLENDSHAPES for _, c in aliased]),
        )

    def apply(self, values: np.ndarray, blendshapes: np.ndarray) -> np.ndarray:
        """(..., n_controls) values with the aliased ones read from (..., 52) blendshapes, but
        for those aliased to a blendshape the front end never moves, which keep `values`' own."""
        out = values.astype(np.float32, copy=True)
        m = self.moved
        out[..., self.controls[m]] = self.low[m] + np.clip(blendshapes[..., self.shapes[m]], 0.0, 1.0) * self.span[m]
        return out


@dataclass(frozen=True)
class Binding:
    """One avatar an actor drives, with its control adjustments resolved against the rig and
    the reader of the actor's expression that drives it."""

    avatar_id: str
    spec: RigSpec
    adjust: ControlAdjustments
    controls: rig_pb2.AvatarControls  # what subscribers are told before this avatar's frames
    reader: stream_pb2.ExpressionReader.ValueType = stream_pb2.EXPRESSION_READER_AUTO
    drive: BlendshapeDrive | None = None  # None: the rig has no ARKit-aliased control

    @property
    def uses_animator(self) -> bool:
        """Whether any of the avatar's controls come from its animator (then it must have one)."""
        if self.reader == stream_pb2.EXPRESSION_READER_BLENDSHAPES:
            return False
        all_aliased = self.drive is not None and len(self.drive.controls) == len(self.spec.controls)
        return self.reader == stream_pb2.EXPRESSION_READER_ANIMATOR or not all_aliased

    @property
    def wants_animator(self) -> bool:
        """Whether the avatar's animator, where it has one, drives any of its controls: those it
        must (`uses_animator`), and under AUTO those aliased to a blendshape the front end never
        moves (UNREAD_BLENDSHAPES)."""
        unread = self.drive is not None and not self.drive.moved.all()
        return self.uses_animator or (self.reader == stream_pb2.EXPRESSION_READER_AUTO and unread)

    def read(self, animated: np.ndarray | None, blendshapes: np.ndarray | None) -> np.ndarray | None:
        """The avatar's raw controls from what the analysis found (None: nothing to show)."""
        if self.reader == stream_pb2.EXPRESSION_READER_ANIMATOR or self.drive is None:
            return animated
        if blendshapes is None:
            return None if self.reader == stream_pb2.EXPRESSION_READER_BLENDSHAPES else animated
        if animated is None and self.uses_animator:
            return None  # the animator's half is missing (no model any more): show nothing
        base = animated if animated is not None else np.asarray(self.spec.defaults, np.float32)
        return self.drive.apply(base, blendshapes)

    @classmethod
    def resolve(cls, message: stream_pb2.AvatarBinding, spec: RigSpec) -> Binding:
        index = {name: i for i, name in enumerate(spec.control_names)}
        gain = np.ones(len(index), np.float32)
        offset = np.zeros(len(index), np.float32)
        low = np.array([c.min for c in spec.controls], np.float32)
        high = np.array([c.max for c in spec.controls], np.float32)
        for name, adjustment in message.adjustments.items():
            if name not in index:
                raise BadBinding(f"avatar {spec.name!r} has no control {name!r} to adjust")
            i = index[name]
            numbers = (adjustment.gain, adjustment.offset, adjustment.clamp_min, adjustment.clamp_max)
            if not all(math.isfinite(n) for n in numbers):  # they would reach every frame
                raise BadBinding(f"control {name!r}: gain, offset and clamps must be finite numbers")
            gain[i], offset[i] = adjustment.gain, adjustment.offset
            if adjustment.HasField("clamp_min"):
                low[i] = adjustment.clamp_min
            if adjustment.HasField("clamp_max"):
                high[i] = adjustment.clamp_max
            if low[i] > high[i]:
                raise BadBinding(f"control {name!r}: clamp_min is above clamp_max")
        controls = rig_pb2.AvatarControls(
            avatar_id=message.avatar_id,
            avatar_name=spec.name,
            control_names=spec.control_names,
            arkit_aliases=[c.arkit_alias for c in spec.controls],
        )
        if message.reader not in stream_pb2.ExpressionReader.values():
            raise BadBinding(f"avatar {spec.name!r}: unknown expression reader {message.reader}")
        drive = BlendshapeDrive.of(spec) if any(c.arkit_alias for c in spec.controls) else None
        if message.reader == stream_pb2.EXPRESSION_READER_BLENDSHAPES and drive is None:
            raise BadBinding(
                f"avatar {spec.name!r} has no control with an ARKit alias for the blendshapes reader to drive"
            )
        adjust = ControlAdjustments(gain, offset, low, high)
        return cls(message.avatar_id, spec, adjust, controls, message.reader, drive)

    def to_proto(self) -> stream_pb2.AvatarBinding:
        adjustments = {
            name: stream_pb2.ControlAdjustment(
                gain=float(self.adjust.gain[i]),
                offset=float(self.adjust.offset[i]),
                clamp_min=float(self.adjust.low[i]),
                clamp_max=float(self.adjust.high[i]),
            )
            for i, name in enumerate(self.spec.control_names)
            if (self.adjust.gain[i], self.adjust.offset[i]) != (1, 0)
            or (self.adjust.low[i], self.adjust.high[i]) != (self.spec.controls[i].min, self.spec.controls[i].max)
        }
        return stream_pb2.AvatarBinding(avatar_id=self.avatar_id, adjustments=adjustments, reader=self.reader)


@dataclass
class Actor:
    id: str
    name: str
    bindings: dict[str, Binding]
    streaming: bool = False  # an animate call feeds this actor

    def to_proto(self) -> stream_pb2.Actor:
        return stream_pb2.Actor(
            id=self.id,
            name=self.name,
            bindings=[b.to_proto() for b in self.bindings.values()],
            streaming=self.streaming,
        )


class SessionLink(Protocol):
    """How a shared session reaches the other servers of a cluster. On one server there is
    none; private sessions (one stream's own) never have one. Rig frames from other servers come
    back through `Session.deliver`. None of these may block the event loop."""

    def frames(self, session: Session, frames: Offered) -> None:
        """Send one source frame's rig frames to the servers listening to the session."""
        ...

    def listening(self, session: Session, listening: bool) -> None:
        """The session has its first local subscriber (True) or lost its last one (False)."""
        ...

    async def saved(self, session: Session, actor: Actor | None = None) -> None:
        """Record the session (created here) or one of its actors (joined or rebound here);
        returns once every server can find it."""
        ...

    def left(self, session: Session, actor_id: str) -> None:
        """An actor left the session here."""
        ...

    def closed(self, session: Session) -> None:
        """The session was closed here (not merely this server stopping)."""
        ...

    def stage(self) -> stream_pb2.StageStats:
        """The link as a stage of the live path, named "cluster": frames from other servers
        (processed) and frames lost between servers (dropped), for the stats and metrics."""
        ...

    async def fetch(self, session_id: str) -> None:
        """Bring this server's copy of a session another server created (and its actors) up to
        date, adopting it into the registry; nothing if the cluster has no such session."""
        ...


@dataclass
class Session:
    id: str
    name: str
    token: str
    created_us: int
    private: bool = False  # made for one animate call and closed with it
    seq: int = 0  # creation order in its registry: where a listing's page ends
    actors: dict[str, Actor] = field(default_factory=dict)
    subscriptions: set[RigSubscription] = field(default_factory=set)
    release: Callable[[], None] = lambda: None  # gives back its place under the caller's cap
    link: SessionLink | None = None  # in a cluster: the other servers (not for private sessions)
    _listeners: set[RigSubscription] = field(default_factory=set)  # those that want other servers' frames

    def join(self, name: str, bindings: dict[str, Binding]) -> Actor:
        actor = Actor(uuid.uuid4().hex, name, bindings)
        self.actors[actor.id] = actor
        return actor

    def actor(self, actor_id: str) -> Actor:
        try:
            return self.actors[actor_id]
        except KeyError:
            raise ActorNotFound(self.id, actor_id) from None

    def leave(self, actor_id: str) -> Actor:
        actor = self.actor(actor_id)
        del self.actors[actor_id]
        if self.link is not None:
            self.link.left(self, actor_id)
        return actor

    def subscribe(
        self,
        avatar_ids: frozenset[str] = frozenset(),
        capacity: int = DEFAULT_CAPACITY,
        actor_id: str = "",
        batched: bool = False,
        own_stream: bool = False,
    ) -> RigSubscription:
        """`own_stream`: the subscription of the stream that feeds `actor_id` here (an animate
        call, a WHIP peer), which never wants frames made on another server."""
        subscription = RigSubscription(avatar_ids, capacity, actor_id, batched)
        self.subscriptions.add(subscription)
        if self.link is not None and not own_stream:
            self._listeners.add(subscription)
            if len(self._listeners) == 1:
                self.link.listening(self, True)
        return subscription

    def unsubscribe(self, subscription: RigSubscription) -> None:
        self.subscriptions.discard(subscription)
        if subscription in self._listeners:
            self._listeners.discard(subscription)
            if self.link is not None and not self._listeners:
                self.link.listening(self, False)

    def publish(self, frames: list[tuple[Binding, rig_pb2.RigFrame]]) -> None:
        """One source frame's rig frames, one per avatar bound to its actor: to this server's
        subscribers, and through the link to the other servers'."""
        offered = [(binding.controls, frame) for binding, frame in frames]
        self.deliver(offered)
        if self.link is not None:
            self.link.frames(self, offered)

    def deliver(self, offered: Offered) -> None:
        """Offer rig frames (made here, or on another server of the cluster) to this server's
        subscribers."""
        for subscription in self.subscriptions:
            subscription.offer(offered)

    def subscriber_drops(self) -> int:
        return sum(s.dropped for s in self.subscriptions)

    def close(self, end: StreamEnd) -> None:
        for subscription in self.subscriptions:
            subscription.close(end)
        if self.link is not None and self._listeners:
            self.link.listening(self, False)
        self.subscriptions.clear()
        self._listeners.clear()
        self.release()

    def to_proto(self, with_token: bool = False) -> stream_pb2.Session:
        created = stream_pb2.Session().create_time
        created.FromMicroseconds(self.created_us)
        return stream_pb2.Session(
            id=self.id,
            name=self.name,
            token=self.token if with_token else "",
            create_time=created,
            actors=[a.to_proto() for a in self.actors.values()],
            subscriber_count=len(self.subscriptions),
        )


class SessionRegistry:
    """Every live session of one server. `require_tokens` when the server runs with API keys;
    `tally` caps the sessions each caller keeps open (private ones come with a stream or a
    peer, which have caps of their own)."""

    def __init__(self, require_tokens: bool, tally: Tally | None = None, link: SessionLink | None = None) -> None:
        self.require_tokens = require_tokens
        self.link = link  # in a cluster: shares every session but private ones
        self._tally = tally
        self._sessions: dict[str, Session] = {}
        self._seq = itertools.count(1)

    def create(self, name: str, private: bool = False, caller: str = "") -> Session:
        release = self._tally.take(caller) if self._tally is not None and not private else (lambda: None)
        session = Session(
            uuid.uuid4().hex, name, secrets.token_urlsafe(24), now_us(), private, next(self._seq), release=release,
            link=None if private else self.link,
        )
        self._sessions[session.id] = session
        return session

    def adopt(self, session_id: str, name: str, token: str, created_us: int) -> Session:
        """This server's copy of a session another server of the cluster created."""
        session = self._sessions.get(session_id)
        if session is None:
            session = Session(session_id, name, token, created_us, seq=next(self._seq), link=self.link)
            self._sessions[session_id] = session
        return session

    def local(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(session_id) from None

    def enter(self, session_id: str, token: str) -> Session:
        """The session, for a caller that must show its token: to join, subscribe, rebind,
        leave, close, or change its outputs. Who holds the token may end the meeting; an API
        key alone does not let one tenant end another's."""
        session = self.get(session_id)
        if self.require_tokens and not hmac.compare_digest(token.encode(), session.token.encode()):
            raise BadSessionToken(session_id)
        return session

    def close(self, session_id: str, end: StreamEnd | None = None) -> Session:
        """Close the session, for every server of a cluster too."""
        session = self.forget(session_id, end or session_closed())
        if session.link is not None:
            session.link.closed(session)
        return session

    def forget(self, session_id: str, end: StreamEnd) -> Session:
        """End the session's streams on this server only (it stops, or another server closed
        the session)."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise SessionNotFound(session_id)
        session.close(end)
        return session

    def sessions(self, include_private: bool = False, after: int = 0) -> list[Session]:
        """Sessions in creation order (a dict keeps it), those created after `after` only."""
        return [
            s for s in self._sessions.values() if s.seq > after and (include_private or not s.private)
        ]

    def close_all(self, end: StreamEnd | None = None) -> None:
        """This server stops: its streams end; a cluster's other servers keep the sessions."""
        for session_id in list(self._sessions):
            self.forget(session_id, end or server_shutdown())
