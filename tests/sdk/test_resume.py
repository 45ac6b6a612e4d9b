"""`animate(resume=...)` is for joined actors, and its settings are checked."""

from __future__ import annotations

import grpc
import pytest

from freeavatar import AsyncClient, InvalidArgument, Resume
from freeavatar.errors import FreeAvatarError, StreamEnded, Unavailable
from freeavatar.resume import resumable


async def test_resume_needs_a_joined_actor(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument, match="resume needs a joined actor"):
        client.animate([], avatar_ids=["robot"], resume=Resume())


def test_resume_settings_and_what_it_resumes() -> None:
    with pytest.raises(ValueError, match="first_delay_s"):
        Resume(first_delay_s=2, max_delay_s=1)
    assert resumable(Unavailable("gone"))
    assert resumable(StreamEnded("stopping", grpc.StatusCode.UNAVAILABLE, "SERVER_SHUTDOWN"))
    assert not resumable(StreamEnded("closed", grpc.StatusCode.UNAVAILABLE, "SESSION_CLOSED"))
    assert resumable(FreeAvatarError("Internal error from Core", grpc.StatusCode.INTERNAL))  # a write cut off
    assert not resumable(FreeAvatarError("a bug", grpc.StatusCode.INTERNAL))  # the server's own
