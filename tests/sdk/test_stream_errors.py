"""What the caller sees when an animate call fails: the frames iterator's own exception, and the
server's status when it refuses a stream the client is still feeding."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from freeavatar import ActorFrame, AsyncClient, Client, FreeAvatarError, NotFound, RigSpec
from tests.conftest import ServerThread


class CameraUnplugged(Exception):
    pass


async def failing_camera(clip: list[bytes], frames: int = 4) -> AsyncIterator[ActorFrame]:
    for frame in clip[:frames]:
        yield ActorFrame(frame)
        await asyncio.sleep(1 / 30)
    raise CameraUnplugged("camera 2 unplugged")


def failing_frames(clip: list[bytes], frames: int = 4) -> Iterator[bytes]:
    yield from clip[:frames]
    raise CameraUnplugged("camera 2 unplugged")


async def test_async_frames_iterator_error_reaches_the_caller(live, clip: list[bytes]) -> None:
    _, client, ids = live
    stream = client.animate(failing_camera(clip), avatar_ids=[ids["robot"]])
    with pytest.raises(CameraUnplugged, match="camera 2 unplugged") as raised:
        async for _ in stream:
            pass
    assert raised.traceback[-1].name == "failing_camera"  # where the caller's code raised
    # The server carries on.
    assert [f async for f in client.animate(clip[:3], avatar_ids=[ids["robot"]])]


async def test_sync_frames_iterator_error_reaches_the_async_caller(live, clip: list[bytes]) -> None:
    _, client, ids = live
    with pytest.raises(CameraUnplugged):
        async for _ in client.animate(failing_frames(clip, 0), avatar_ids=[ids["cat"]]):
            pass


async def test_a_frame_the_sdk_cannot_encode_is_its_error(live) -> None:
    _, client, ids = live
    with pytest.raises(ValueError, match=r"an RGB frame must be \(height, width, 3\)"):
        async for _ in client.animate([np.zeros((8, 8), np.uint8)], avatar_ids=[ids["robot"]]):
            pass


async def test_cancelling_the_reader_still_cancels(live, clip: list[bytes]) -> None:
    # Only the input's failure turns a CancelledError into the input's error.
    _, client, ids = live

    async def read() -> None:
        async for _ in client.animate(failing_camera(clip, 10_000), avatar_ids=[ids["robot"]]):
            pass

    task = asyncio.create_task(read())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_samples_iterator_error_reaches_the_uploader(client: AsyncClient) -> None:
    avatar = await client.register_avatar(RigSpec.arkit52("head"))

    def samples() -> Iterator[tuple[list[float], bytes]]:
        yield [0.0] * 52, b"\x89PNG not really"
        raise CameraUnplugged("renderer crashed")

    with pytest.raises(CameraUnplugged, match="renderer crashed"):
        await client.upload_render_samples(avatar.id, samples())


def test_blocking_frames_iterator_error_reaches_the_caller(
    live_thread: ServerThread, avatar_ids: dict[str, str], clip: list[bytes]
) -> None:
    with Client(live_thread.address) as client:
        frames = client.animate(failing_frames(clip), avatar_ids=[avatar_ids["robot"]])
        with pytest.raises(CameraUnplugged, match="camera 2 unplugged"):
            for _ in frames:
                pass
        assert list(client.animate(clip[:3], avatar_ids=[avatar_ids["robot"]]))


# Frames bigger than the HTTP/2 flow-control window (64 KiB): the first one is still being
# written when the server refuses the call, which is when the race shows (`freeavatar stream`
# with a video's JPEGs). The server runs on its own thread so that its refusal and the client's
# write race as they do between processes.
LARGE_FRAME = np.random.default_rng(0).integers(0, 256, (480, 480, 3), dtype=np.uint8)
RUNS = 64  # the race shows in 3-60% of runs here: 64 runs all but always catch it


# The server sends headers once it accepts an animate call and the SDK waits for them before
# sending frames (grpc/grpc#36066: a write in flight at a refusal turns its status to INTERNAL).
async def test_unknown_avatar_is_not_found_every_time(live_thread: ServerThread) -> None:
    outcomes: Counter[str] = Counter()
    async with AsyncClient(live_thread.address) as client:
        for _ in range(RUNS):

            async def camera() -> AsyncIterator[ActorFrame]:
                for _ in range(30):
                    yield ActorFrame(LARGE_FRAME)
                    await asyncio.sleep(1 / 30)

            try:
                async for _ in client.animate(camera(), avatar_ids=["nope"]):
                    pass
                outcomes["no error"] += 1
            except NotFound as error:
                assert "no avatar with id 'nope'" in str(error)
                outcomes["NOT_FOUND"] += 1
            except FreeAvatarError as error:
                outcomes[str(error)] += 1
    assert outcomes == {"NOT_FOUND": RUNS}
