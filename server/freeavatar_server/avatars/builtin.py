"""The built-in avatars made streamable at once: registered with their rig and given the
shipped animator, so the demo and a fresh server need no training first."""

from __future__ import annotations

import shutil
from pathlib import Path

from freeavatar._proto import avatar_pb2
from freeavatar_server.inference.shipped import ANIMATOR_DIR as SHIPPED_ANIMATOR
from freeavatar_server.store import AvatarNameTaken, Store


def install_builtin_avatars(
    store: Store, data_dir: Path, names: list[str], animator: Path | None = None
) -> dict[str, str]:
    """Register each named built-in avatar (unless an avatar of that name exists) with an
    animator (default: the shipped one) as its active version; returns {name: avatar id}."""
    from freeavatar_server.synth.avatars import BUILTIN_AVATARS  # lazy: torch

    animator = animator or SHIPPED_ANIMATOR
    if not (animator / "animator.pt").exists():
        raise FileNotFoundError(f"no animator checkpoint at {animator}")
    installed: dict[str, str] = {}
    existing = {record.spec.name: record for record in store.list_avatars(0, 10_000)}
    for name in names:
        builtin = BUILTIN_AVATARS[name]
        record = existing.get(name)
        if record is None:
            try:
                record = store.add_avatar(builtin.spec)
            except AvatarNameTaken:
                record = next(r for r in store.list_avatars(0, 10_000) if r.spec.name == name)
        installed[name] = record.id
        if store.avatar_summary(record.id).animator is not None:
            continue
        target = data_dir / "models" / record.id / "animator" / "builtin"
        shutil.copytree(animator, target, dirs_exist_ok=True)
        store.publish_model(
            job_id="",  # shipped, not trained by a job here
            avatar_id=record.id,
            kind=avatar_pb2.MODEL_KIND_ANIMATOR,
            metrics={},
            path=str(target.relative_to(data_dir)),
        )
    return installed
