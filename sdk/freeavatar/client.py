"""Clients for a FreeAvatar server: `AsyncClient` for asyncio code, `Client` for blocking code.

Both speak the same gRPC contract (proto/freeavatar/v1); `Client` runs an `AsyncClient` on a
private event loop thread, so there is one implementation of every call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from freeavatar._proto import avatar_pb2, avatar_pb2_grpc
from freeavatar.avatar import Avatar
from freeavatar.errors import from_rpc_error
from freeavatar.rig import RigSpecLike, load_rig_spec

DEFAULT_ADDRESS = "localhost:50051"
_T = TypeVar("_T")


class AsyncClient:
    """A connection to a FreeAvatar server.

    `api_key` is sent as a bearer token on every call. `root_certificates` (PEM bytes or a path)
    turns on TLS and verifies the server against it; `tls=True` verifies against the system roots.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: bytes | str | Path | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self.address = address
        self._timeout = timeout
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        if root_certificates is not None or tls:
            credentials = grpc.ssl_channel_credentials(_read_pem(root_certificates))
            self._channel = grpc.aio.secure_channel(address, credentials)
        else:
            self._channel = grpc.aio.insecure_channel(address)
        self._avatars = avatar_pb2_grpc.AvatarServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channel connects (a server that is still starting)."""
        await asyncio.wait_for(self._channel.channel_ready(), timeout)

    # Avatars

    async def register_avatar(self, spec: RigSpecLike) -> Avatar:
        """Enrol an avatar from a RigSpec, a dict, or the path of a JSON rig spec."""
        request = avatar_pb2.RegisterAvatarRequest(spec=load_rig_spec(spec).to_proto())
        return Avatar.from_proto(await self._unary(self._avatars.RegisterAvatar, request))

    async def get_avatar(self, avatar_id: str) -> Avatar:
        request = avatar_pb2.GetAvatarRequest(avatar_id=avatar_id)
        return Avatar.from_proto(await self._unary(self._avatars.GetAvatar, request))

    async def list_avatars(self) -> list[Avatar]:
        """Every registered avatar, oldest first."""
        avatars: list[Avatar] = []
        token = ""
        while True:
            request = avatar_pb2.ListAvatarsRequest(page_token=token)
            page = await self._unary(self._avatars.ListAvatars, request)
            avatars.extend(Avatar.from_proto(a) for a in page.avatars)
            token = page.next_page_token
            if not token:
                return avatars

    async def delete_avatar(self, avatar_id: str) -> None:
        request = avatar_pb2.DeleteAvatarRequest(avatar_id=avatar_id)
        await self._unary(self._avatars.DeleteAvatar, request)

    async def _unary(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None


class Client:
    """The blocking twin of `AsyncClient`, with the same methods and arguments."""

    def __init__(self, address: str = DEFAULT_ADDRESS, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="freeavatar-client", daemon=True
        )
        self._thread.start()
        self._client: AsyncClient = self._run(_open(address, options))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def address(self) -> str:
        return self._client.address

    def wait_ready(self, timeout: float = 10.0) -> None:
        self._run(self._client.wait_ready(timeout))

    def register_avatar(self, spec: RigSpecLike) -> Avatar:
        return self._run(self._client.register_avatar(spec))

    def get_avatar(self, avatar_id: str) -> Avatar:
        return self._run(self._client.get_avatar(avatar_id))

    def list_avatars(self) -> list[Avatar]:
        return self._run(self._client.list_avatars())

    def delete_avatar(self, avatar_id: str) -> None:
        self._run(self._client.delete_avatar(avatar_id))

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


async def _open(address: str, options: dict[str, Any]) -> AsyncClient:
    # grpc.aio binds a channel to the loop it is created on: create it on the client's own loop.
    return AsyncClient(address, **options)


def _read_pem(source: bytes | str | Path | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()
