"""Everything a user of the SDK meets in its public signatures can be imported from `freeavatar`."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing

from google.protobuf.message import Message

import freeavatar
from freeavatar import AsyncClient, Client, RigStream

PROTO_BOUNDARY = {"from_proto", "to_proto"}  # the wire types, for the SDK's own use


def sdk_types(annotation: object) -> set[type]:
    """The SDK's classes in a resolved annotation (through unions and generics), and the
    protobuf messages it hands out as they are (get_stats)."""
    found: set[type] = set()
    for arg in typing.get_args(annotation):
        found |= sdk_types(arg)
    if isinstance(annotation, type) and (
        annotation.__module__.startswith("freeavatar.") or issubclass(annotation, Message)
    ):
        found.add(annotation)
    return found


def public_types() -> set[type]:
    """Classes in the public methods' signatures, then in those classes' fields, until closed."""
    pending: list[type] = [AsyncClient, Client, RigStream]
    seen: set[type] = set()
    while pending:
        owner = pending.pop()
        if not issubclass(owner, Message):
            hints = [typing.get_type_hints(owner)] if dataclasses.is_dataclass(owner) else []
            for name, member in inspect.getmembers(owner):
                if not name.startswith("_") and name not in PROTO_BOUNDARY and callable(member):
                    if inspect.isfunction(member) or inspect.ismethod(member):
                        hints.append(typing.get_type_hints(member))
            if hasattr(owner, "__anext__"):
                hints.append(typing.get_type_hints(owner.__anext__))
            for found in (sdk_types(h) for group in hints for h in group.values()):
                pending.extend(found - seen)
                seen |= found
    return seen


def test_every_type_in_the_public_signatures_is_exported() -> None:
    types_ = public_types()
    wanted = {"ActorFrame", "RigFrame", "RigStream", "Session", "Actor", "AvatarControls", "PipelineStats"}
    assert wanted <= {t.__name__ for t in types_}
    missing = sorted(t.__name__ for t in types_ if getattr(freeavatar, t.__name__, None) is not t)
    assert missing == []
    assert {t.__name__ for t in types_} <= set(freeavatar.__all__)


def test_all_names_import_and_are_unique() -> None:
    assert len(freeavatar.__all__) == len(set(freeavatar.__all__))
    for name in freeavatar.__all__:
        assert getattr(freeavatar, name) is not None
    namespace: dict[str, object] = {}
    exec("from freeavatar import *", namespace)
    assert set(freeavatar.__all__) <= set(namespace)


def test_argument_aliases_are_exported() -> None:
    # For callers annotating their own code: what animate and the uploads accept.
    for alias in ("FrameLike", "SampleLike", "KeyframeLike", "RigSpecLike"):
        assert isinstance(getattr(freeavatar, alias), types.UnionType | typing._UnionGenericAlias)  # type: ignore[attr-defined]
