"""The blocking Client is generated from AsyncClient: every public method has a blocking twin
with the same parameters and docstring, and the twins behave as the async methods do."""

from __future__ import annotations

import inspect
import pydoc
from collections.abc import Iterator

import pytest

from freeavatar import AsyncClient, Client, NotFound
from freeavatar.client import _Blocking
from tests.conftest import ServerThread

PUBLIC = sorted(
    name for name, member in inspect.getmembers(AsyncClient, inspect.isfunction) if not name.startswith("_")
)
EXPLICIT = {"close", "animate"}  # their blocking forms differ: written out in Client


def test_every_public_async_method_has_a_blocking_twin() -> None:
    assert len(PUBLIC) > 30
    missing = [name for name in PUBLIC if not callable(getattr(Client, name, None))]
    assert missing == []
    assert isinstance(inspect.getattr_static(Client, "address"), property)  # AsyncClient.address


@pytest.mark.parametrize("name", sorted(set(PUBLIC) - EXPLICIT))
def test_twins_keep_the_async_parameters_and_docstring(name: str) -> None:
    async_method, blocking = getattr(AsyncClient, name), getattr(Client, name)
    assert inspect.signature(blocking).parameters == inspect.signature(async_method).parameters
    if async_method.__doc__:
        assert blocking.__doc__ == async_method.__doc__
    else:
        assert blocking.__doc__ == f"The blocking form of `AsyncClient.{name}`."
    bound = getattr(Client.__new__(Client), name)  # as an instance's method: no `self`
    assert list(inspect.signature(bound).parameters) == list(inspect.signature(async_method).parameters)[1:]


def test_streaming_twins_return_blocking_iterators() -> None:
    returns = {name: inspect.signature(getattr(Client, name)).return_annotation for name in PUBLIC}
    assert returns["watch_job"] == "Iterator[JobEvent]"
    assert returns["subscribe"] == returns["animate"] == "Iterator[RigFrame]"
    assert returns["get_avatar"] == "Avatar"


def test_blocking_animate_takes_the_async_keywords() -> None:
    keywords = {
        name: (p.kind, p.default)
        for name, p in inspect.signature(AsyncClient.animate).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }
    mine = inspect.signature(Client.animate).parameters
    assert {name: (p.kind, p.default) for name, p in mine.items() if p.kind is p.KEYWORD_ONLY} == keywords


def test_help_shows_the_methods() -> None:
    text = pydoc.render_doc(Client, renderer=pydoc.plaintext)
    assert "get_avatar(self, avatar_id: 'str') -> 'Avatar'" in text
    assert "Every registered avatar, oldest first." in text  # list_avatars' docstring


def test_a_twin_must_carry_its_async_name() -> None:
    # Python 3.11 wraps an error from __set_name__ in a RuntimeError; 3.12 raises it as it is.
    with pytest.raises((RuntimeError, TypeError)) as raised:

        class Wrong:
            get_job = _Blocking(AsyncClient.list_jobs)

    error = raised.value.__cause__ or raised.value
    assert "Wrong.get_job mirrors AsyncClient.list_jobs" in str(error)


def test_blocking_sessions_and_errors(server_thread: ServerThread) -> None:
    with Client(server_thread.address, timeout=10.0) as client:
        client.wait_ready(5.0)
        assert client.address == server_thread.address
        session = client.create_session(name="standup")  # keywords pass through
        assert client.get_session(session.id).name == "standup"
        assert [s.id for s in client.list_sessions()] == [session.id]
        actor = client.join_session(session.id, [], "ada", session.token)
        assert client.get_session(session.id).actors[0].id == actor.id
        assert client.list_outputs(session.id) == []
        assert client.get_stats().active_sessions == 1
        client.close_session(session.id)
        with pytest.raises(NotFound, match="no session"):
            client.get_session(session.id)
        frames: Iterator[object] = client.subscribe("nope")
        with pytest.raises(NotFound, match="no session"):
            next(frames)
        with pytest.raises(NotFound):
            list(client.watch_job("nope"))
    client.close()  # again: nothing to do
