"""Which models the live pipeline runs: the expression encoder's file, and each avatar's active
animator. (The analysis workers load and run them, with the face localiser and the head-pose
model: `analysis`.)

A newly published or activated animator version is checked beside the old one and swapped in
with one dict assignment, so streams pick it up on their next frame and never stop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from freeavatar_server.inference.animator import runtime_manifest
from freeavatar_server.live.analysis import AnimatorRef
from freeavatar_server.live.errors import NotReady
from freeavatar_server.store import Store


class AnimatorMissing(NotReady):
    """The avatar cannot be streamed: no animator has been tuned for it."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"avatar {name!r} has no tuned animator yet: train its renderer and run "
            "finetune_animator before streaming it"
        )


class EncoderMissing(NotReady):
    def __init__(self, path: Path) -> None:
        super().__init__(f"no expression encoder at {path}: streaming needs one")


@dataclass(frozen=True)
class LoadedAnimator:
    path: Path
    avatar_keys: frozenset[str]  # the avatars inside the model
    key: str  # this avatar inside the model: its id, or its built-in name in a shipped model


class LiveModels:
    def __init__(self, store: Store, data_dir: Path, encoder_path: Path) -> None:
        self._store = store
        self._data_dir = data_dir
        self.encoder_path = encoder_path
        self._animators: dict[str, LoadedAnimator] = {}
        # One refresh at a time: actors joining together would otherwise each load the same
        # animator (seconds of CPU and a copy of every ONNX session per actor).
        self._refreshing = asyncio.Lock()

    def check_encoder(self) -> None:
        """EncoderMissing unless the expression encoder is there: streaming needs it."""
        if not self.encoder_path.exists():
            raise EncoderMissing(self.encoder_path)

    def animator_ref(self, avatar_id: str) -> AnimatorRef | None:
        """What drives the avatar now, for the analysis workers; None if it has none (any more)."""
        loaded = self._animators.get(avatar_id)
        return AnimatorRef(str(loaded.path), loaded.key) if loaded else None

    async def ensure(self, avatar_id: str) -> None:
        """Load the avatar's active animator unless it is loaded; AnimatorMissing if none."""
        if avatar_id not in self._animators:
            await self.refresh(avatar_id)
        if avatar_id not in self._animators:
            name = (await asyncio.to_thread(self._store.get_avatar, avatar_id)).spec.name
            raise AnimatorMissing(name)

    async def refresh(self, avatar_id: str) -> None:
        """Swap in the avatar's active animator version (after a publish or an activation)."""
        async with self._refreshing:
            await self._refresh(avatar_id)

    async def _refresh(self, avatar_id: str) -> None:
        summary = await asyncio.to_thread(self._store.avatar_summary, avatar_id)
        if summary.animator is None:
            self._animators.pop(avatar_id, None)
            return
        path = self._data_dir / summary.animator.path
        current = self._animators.get(avatar_id)
        if current is not None and current.path == path:
            return
        shared = next((a for a in self._animators.values() if a.path == path), None)
        keys = shared.avatar_keys if shared else await asyncio.to_thread(_avatars_in, path)
        name = (await asyncio.to_thread(self._store.get_avatar, avatar_id)).spec.name
        key = avatar_id if avatar_id in keys else name
        if key not in keys:
            raise AnimatorMissing(name)
        self._animators[avatar_id] = LoadedAnimator(path, keys, key)

    def forget(self, avatar_id: str) -> None:
        self._animators.pop(avatar_id, None)


def _avatars_in(model_dir: Path) -> frozenset[str]:
    """The avatars a published animator drives."""
    return frozenset(runtime_manifest(model_dir)["avatars"])
