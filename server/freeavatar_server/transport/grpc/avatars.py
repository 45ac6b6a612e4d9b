"""AvatarService: enrolment of avatars (rig specs), their render samples and model versions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from freeavatar._proto import avatar_pb2, avatar_pb2_grpc
from freeavatar.rig import RigSpec
from freeavatar_server.avatars.sampling import propose_rig_vectors
from freeavatar_server.images import BadImage, decode_image
from freeavatar_server.live.errors import BadRequest, kind_of, require_id
from freeavatar_server.store import (
    AvatarRecord,
    AvatarSummary,
    ModelVersionRecord,
    StorageFailure,
    Store,
)
from freeavatar_server.transport.grpc.status import grpc_errors, status_for
from freeavatar_server.transport.limits import LIMITS, byte_bounded, run_heavy

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PROPOSED_VECTORS = 100_000
PAGE_FETCH = 32  # records read from the store at a time while a page fills up
UPLOAD_BATCH = 64  # samples per store transaction while an upload streams in

log = logging.getLogger(__name__)


ModelChanged = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class PairUpload:
    """One kind of (rig, image) upload: how to read its requests and where the pairs go."""

    noun: str
    parts: Callable[[Any], tuple[str, list[float], bytes]]  # request -> (avatar id, rig, image)
    add: Callable[[str, list[tuple[np.ndarray, bytes]]], int]  # store them; returns the total
    count: Callable[[AvatarSummary], int]  # the avatar's total, from its summary


class AvatarService(avatar_pb2_grpc.AvatarServiceServicer):
    def __init__(
        self,
        store: Store,
        on_deleted: ModelChanged | None = None,
        on_model_changed: ModelChanged | None = None,
    ) -> None:
        self._store = store
        self._on_deleted = on_deleted  # live streams unbind the avatar
        self._on_model_changed = on_model_changed  # live streams swap in the active version

    @grpc_errors
    async def RegisterAvatar(
        self, request: avatar_pb2.RegisterAvatarRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.Avatar:
        spec = RigSpec.from_proto(request.spec)
        spec.validate()
        record = await asyncio.to_thread(self._store.add_avatar, spec)
        return await self._avatar_message(record)

    @grpc_errors
    async def GetAvatar(
        self, request: avatar_pb2.GetAvatarRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.Avatar:
        record = await self._avatar(request.avatar_id)
        return await self._avatar_message(record)

    @grpc_errors
    async def ListAvatars(
        self, request: avatar_pb2.ListAvatarsRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.ListAvatarsResponse:
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = page_position(request.page_token)
        return await asyncio.to_thread(self._avatar_page, after, limit)

    def _avatar_page(self, after: int, limit: int) -> avatar_pb2.ListAvatarsResponse:
        """A page bounded in bytes as well as count, so that no avatar makes listing fail for
        everyone; read and built off the event loop (a page may hold megabytes of specs)."""
        records = stored_pages(self._store.list_avatars, after)
        page, more = byte_bounded(((r.seq, self._avatar_proto(r)) for r in records), limit)
        return avatar_pb2.ListAvatarsResponse(
            avatars=[message for _, message in page],
            next_page_token=str(page[-1][0]) if more else "",
        )

    @grpc_errors
    async def DeleteAvatar(
        self, request: avatar_pb2.DeleteAvatarRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.DeleteAvatarResponse:
        avatar_id = require_id(request.avatar_id, "avatar_id")
        await asyncio.to_thread(self._store.delete_avatar, avatar_id)
        if self._on_deleted is not None:
            await self._on_deleted(avatar_id)
        return avatar_pb2.DeleteAvatarResponse()

    @grpc_errors
    async def UploadRenderSamples(
        self,
        requests: AsyncIterator[avatar_pb2.UploadRenderSamplesRequest],
        context: grpc.aio.ServicerContext,
    ) -> avatar_pb2.UploadSummary:
        """The engine's (rig, rendered image) samples the avatar's neural renderer learns from."""
        upload = PairUpload(
            "samples",
            lambda r: (r.avatar_id, list(r.sample.rig), r.sample.image),
            self._store.add_render_samples,
            lambda summary: summary.render_samples,
        )
        return await self._receive_pairs(requests, upload, context)

    @grpc_errors
    async def UploadKeyframes(
        self,
        requests: AsyncIterator[avatar_pb2.UploadKeyframesRequest],
        context: grpc.aio.ServicerContext,
    ) -> avatar_pb2.UploadSummary:
        """Artist keyframes (actor image + the rig an artist posed for it)."""
        upload = PairUpload(
            "keyframes",
            lambda r: (r.avatar_id, list(r.keyframe.rig), r.keyframe.actor_image),
            self._store.add_keyframes,
            lambda summary: summary.keyframes,
        )
        return await self._receive_pairs(requests, upload, context)

    async def _receive_pairs(
        self, requests: AsyncIterator[Any], upload: PairUpload, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.UploadSummary:
        """Check every (rig, image) pair; store the good ones in batches as they arrive, so a
        broken upload keeps what was sent before the break; name each bad one by its index.

        Every item read is either stored or rejected with its reason: whatever goes wrong with
        one item (an image that does not decode, a bug) rejects that item, not the upload.
        When the store fails (a full disk), the batch in hand is rejected (its transaction rolled
        back), reading stops, and the summary returns at once with `stopped` saying why, so the
        client learns exactly what was stored."""
        record: AvatarRecord | None = None
        batch: list[tuple[int, np.ndarray, bytes]] = []  # (index, rig, image), not yet stored
        summary = avatar_pb2.UploadSummary()

        async def store_batch() -> None:
            assert record is not None
            pairs = [(rig, image) for _, rig, image in batch]
            try:
                summary.total = await asyncio.to_thread(upload.add, record.id, pairs)
            except StorageFailure as error:
                reason = f"not stored: {error}"
                summary.rejected.extend(avatar_pb2.RejectedItem(index=i, reason=reason) for i, _, _ in batch)
                raise
            finally:
                batch.clear()
            summary.accepted += len(pairs)

        try:
            async for index, request in _enumerate(requests):
                summary.received = index + 1
                avatar_id, rig, image = upload.parts(request)
                if record is None:
                    record = await self._avatar(avatar_id)
                try:
                    checked = await asyncio.to_thread(_checked_pair, record, avatar_id, rig, image)
                except Exception as problem:
                    summary.rejected.append(avatar_pb2.RejectedItem(index=index, reason=_rejection(problem, index)))
                    continue
                batch.append((index, checked, image))
                if len(batch) >= UPLOAD_BATCH:
                    await store_batch()
            if batch:
                await store_batch()
        except StorageFailure as error:
            return _stopped(error, summary, upload.noun)  # stop reading; say what was stored
        except BaseException:
            # The request stream broke (the client went away, or sent a message over the size
            # limit): the call is over, so keep what it sent before the break, as documented.
            if record is not None and batch:
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.to_thread(upload.add, record.id, [(r, i) for _, r, i in batch]))
            raise
        if record is None:
            raise BadRequest(f"the upload holds no {upload.noun}")
        if not summary.accepted:
            summary.total = upload.count(await asyncio.to_thread(self._store.avatar_summary, record.id))
        summary.rejected.sort(key=lambda item: item.index)
        return summary

    @grpc_errors
    async def SampleRigVectors(
        self, request: avatar_pb2.SampleRigVectorsRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.SampleRigVectorsResponse:
        record = await self._avatar(request.avatar_id)
        controls = len(record.spec.controls)
        most = max_rig_vectors(controls)
        if not 0 < request.count <= most:
            raise BadRequest(
                f"count must be in 1..{most} for avatar {record.spec.name!r} ({controls} controls; "
                f"a reply holds at most {LIMITS.vectors_reply_bytes // 2**20} MiB), got {request.count}"
            )
        # Hundreds of milliseconds of CPU for a full reply: off the event loop, so that every
        # other call and stream carries on meanwhile.
        return await run_heavy(sampled_vectors, record.spec, request.count, request.seed)

    @grpc_errors
    async def ListModelVersions(
        self, request: avatar_pb2.ListModelVersionsRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.ListModelVersionsResponse:
        record = await self._avatar(request.avatar_id)
        kind = _model_kind(request.kind)
        versions = await asyncio.to_thread(self._store.model_versions, record.id, kind)
        return avatar_pb2.ListModelVersionsResponse(versions=[version_message(v) for v in versions])

    @grpc_errors
    async def ActivateModelVersion(
        self, request: avatar_pb2.ActivateModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> avatar_pb2.ModelVersion:
        record = await self._avatar(request.avatar_id)
        kind = _model_kind(request.kind)
        activated = await asyncio.to_thread(
            self._store.activate_model, record.id, kind, request.version
        )
        if self._on_model_changed is not None:
            await self._on_model_changed(record.id)
        return version_message(activated)

    async def _avatar(self, avatar_id: str) -> AvatarRecord:
        return await asyncio.to_thread(self._store.get_avatar, require_id(avatar_id, "avatar_id"))

    async def _avatar_message(self, record: AvatarRecord) -> avatar_pb2.Avatar:
        return await asyncio.to_thread(self._avatar_proto, record)

    def _avatar_proto(self, record: AvatarRecord) -> avatar_pb2.Avatar:
        summary = self._store.avatar_summary(record.id)
        message = avatar_pb2.Avatar(
            id=record.id,
            spec=record.spec.to_proto(),
            create_time=timestamp(record.created_us),
            render_sample_count=summary.render_samples,
            keyframe_count=summary.keyframes,
        )
        if summary.renderer is not None:
            message.renderer.CopyFrom(version_message(summary.renderer))
        if summary.animator is not None:
            message.animator.CopyFrom(version_message(summary.animator))
        return message


def stored_pages(fetch: Callable[[int, int], list[Any]], after: int) -> Iterator[Any]:
    """Records after position `after`, in order, read from the store a few at a time (a page
    stops early once its bytes are used up, so most of a large listing is never read)."""
    while True:
        records = fetch(after, PAGE_FETCH)
        yield from records
        if len(records) < PAGE_FETCH:
            return
        after = records[-1].seq


def max_rig_vectors(controls: int) -> int:
    """How many rig vectors of `controls` values one SampleRigVectors reply may carry: bounded
    by the reply's bytes (each vector: 4 bytes a value and at most 12 of framing)."""
    return min(MAX_PROPOSED_VECTORS, LIMITS.vectors_reply_bytes // (4 * controls + 12))


def sampled_vectors(spec: RigSpec, count: int, seed: int) -> avatar_pb2.SampleRigVectorsResponse:
    """Built a row at a time: each step is a short call into C, so the thread lets go of the
    GIL between rows and the event loop waits at most ~10 ms for it (one `tolist()` of the
    whole array, or one constructor call with every row, holds it 30-50 ms)."""
    reply = avatar_pb2.SampleRigVectorsResponse()
    for row in propose_rig_vectors(spec, count, seed):
        reply.vectors.add().values.extend(row.tolist())
    return reply


def version_message(record: ModelVersionRecord) -> avatar_pb2.ModelVersion:
    return avatar_pb2.ModelVersion(
        kind=record.kind,  # type: ignore[arg-type]
        version=record.version,
        job_id=record.job_id,
        create_time=timestamp(record.created_us),
        metrics=record.metrics,
        active=record.active,
    )


def timestamp(micros: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def page_position(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise BadRequest(f"page_token {token!r} is not one this server issued")
    return int(token)


def _model_kind(kind: int) -> int:
    if kind not in (avatar_pb2.MODEL_KIND_RENDERER, avatar_pb2.MODEL_KIND_ANIMATOR):
        raise BadRequest("kind must be MODEL_KIND_RENDERER or MODEL_KIND_ANIMATOR")
    return kind


def _checked_pair(record: AvatarRecord, avatar_id: str, rig: list[float], image: bytes) -> np.ndarray:
    """The rig as float32, or BadRequest/BadImage saying what is wrong with the pair."""
    if avatar_id != record.id:
        raise BadRequest(f"names avatar {avatar_id!r}; this upload is for {record.id!r}")
    controls = record.spec.controls
    if len(rig) != len(controls):
        raise BadRequest(f"rig has {len(rig)} values; avatar {record.spec.name!r} has {len(controls)} controls")
    for value, control in zip(rig, controls, strict=True):
        if not math.isfinite(value):
            raise BadRequest(f"control {control.name!r} is not a finite number")
        # float32 on the wire: allow its rounding at the ends of the range
        if not control.min - 1e-6 <= value <= control.max + 1e-6:
            raise BadRequest(
                f"control {control.name!r} = {value:g} is outside [{control.min:g}, {control.max:g}]"
            )
    decode_image(image)
    return np.asarray(rig, dtype=np.float32)


def _rejection(problem: Exception, index: int) -> str:
    """Why one item is rejected: the message of a known kind of error; anything else is a bug
    of ours, logged, and still only this item's rejection."""
    if kind_of(problem) is not None or isinstance(problem, BadImage):
        return str(problem)
    log.error("upload item %d: checking it failed", index, exc_info=problem)
    return f"internal error checking this item: {type(problem).__name__}: {problem}"


def _stopped(error: StorageFailure, summary: avatar_pb2.UploadSummary, noun: str) -> avatar_pb2.UploadSummary:
    """The summary of an upload the store cut short: why, and with what status."""
    summary.rejected.sort(key=lambda item: item.index)
    code = status_for(error) or grpc.StatusCode.INTERNAL
    summary.stopped.code = code.value[0]
    summary.stopped.reason = (
        f"{error}. Of the {summary.received} {noun} read, {summary.accepted} were stored and "
        f"{len(summary.rejected)} were not (listed by index); later ones were not read."
    )
    log.warning("upload stopped: %s", summary.stopped.reason)
    return summary


async def _enumerate(items: AsyncIterator[Any]) -> AsyncIterator[tuple[int, Any]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1
