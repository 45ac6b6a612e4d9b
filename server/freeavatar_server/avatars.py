"""AvatarService: enrolment and lookup of avatars (rig specs) in the store."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from freeavatar._proto import avatar_pb2, avatar_pb2_grpc
from freeavatar.rig import RigSpec
from freeavatar_server.errors import BadRequest, grpc_errors, require_id
from freeavatar_server.store import AvatarRecord, Store

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class AvatarService(avatar_pb2_grpc.AvatarServiceServicer):
    def __init__(self, store: Store) -> None:
        self._store = store

    @grpc_errors
    async def RegisterAvatar(
        self, request: avatar_pb2.RegisterAvatarRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.Avatar:
        spec = RigSpec.from_proto(request.spec)
        spec.validate()
        record = await asyncio.to_thread(self._store.add_avatar, spec)
        return avatar_message(record)

    @grpc_errors
    async def GetAvatar(
        self, request: avatar_pb2.GetAvatarRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.Avatar:
        avatar_id = require_id(request.avatar_id, "avatar_id")
        return avatar_message(await asyncio.to_thread(self._store.get_avatar, avatar_id))

    @grpc_errors
    async def ListAvatars(
        self, request: avatar_pb2.ListAvatarsRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.ListAvatarsResponse:
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _page_position(request.page_token)
        records = await asyncio.to_thread(self._store.list_avatars, after, limit + 1)
        more = len(records) > limit
        records = records[:limit]
        return avatar_pb2.ListAvatarsResponse(
            avatars=[avatar_message(r) for r in records],
            next_page_token=str(records[-1].seq) if more else "",
        )

    @grpc_errors
    async def DeleteAvatar(
        self, request: avatar_pb2.DeleteAvatarRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.DeleteAvatarResponse:
        avatar_id = require_id(request.avatar_id, "avatar_id")
        await asyncio.to_thread(self._store.delete_avatar, avatar_id)
        return avatar_pb2.DeleteAvatarResponse()


def avatar_message(record: AvatarRecord) -> avatar_pb2.Avatar:
    created = Timestamp()
    created.FromMicroseconds(record.created_us)
    return avatar_pb2.Avatar(id=record.id, spec=record.spec.to_proto(), create_time=created)


def _page_position(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise BadRequest(f"page_token {token!r} is not one this server issued")
    return int(token)
