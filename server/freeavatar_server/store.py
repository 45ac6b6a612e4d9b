"""The persistent store: one SQLite file (WAL mode) under the data dir.

Blocking by nature; the services call it through `asyncio.to_thread`. One connection guarded by
a lock keeps writes serial, which is what SQLite does anyway.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from freeavatar.rig import RigSpec
from freeavatar._proto import rig_pb2

# Each entry upgrades the schema by one version (PRAGMA user_version); append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE avatars (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        spec BLOB NOT NULL,          -- a serialized freeavatar.v1.RigSpec
        created_us INTEGER NOT NULL
    );
    """,
)


class StoreError(Exception):
    pass


class AvatarNotFound(StoreError):
    def __init__(self, avatar_id: str) -> None:
        super().__init__(f"no avatar with id {avatar_id!r}")


class AvatarNameTaken(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"an avatar named {name!r} is already registered")


@dataclass(frozen=True)
class AvatarRecord:
    id: str
    spec: RigSpec
    created_us: int
    seq: int  # insertion order, for paging


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        with self._lock:
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                # executescript commits on its own; the version bump rides in the same script.
                self._db.executescript(f"BEGIN; {script} PRAGMA user_version={number}; COMMIT;")

    # Avatars

    def add_avatar(self, spec: RigSpec) -> AvatarRecord:
        avatar_id = uuid.uuid4().hex
        created_us = time.time_ns() // 1000
        blob = spec.to_proto().SerializeToString()
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT INTO avatars (id, name, spec, created_us) VALUES (?, ?, ?, ?)",
                    (avatar_id, spec.name, blob, created_us),
                )
            except sqlite3.IntegrityError:
                raise AvatarNameTaken(spec.name) from None
        return AvatarRecord(avatar_id, spec, created_us, cursor.lastrowid or 0)

    def get_avatar(self, avatar_id: str) -> AvatarRecord:
        with self._lock:
            row = self._db.execute(
                "SELECT id, spec, created_us, rowid FROM avatars WHERE id = ?", (avatar_id,)
            ).fetchone()
        if row is None:
            raise AvatarNotFound(avatar_id)
        return _avatar_record(row)

    def list_avatars(self, after_seq: int, limit: int) -> list[AvatarRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, spec, created_us, rowid FROM avatars WHERE rowid > ? "
                "ORDER BY rowid LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [_avatar_record(row) for row in rows]

    def delete_avatar(self, avatar_id: str) -> None:
        with self._lock:
            cursor = self._db.execute("DELETE FROM avatars WHERE id = ?", (avatar_id,))
        if cursor.rowcount == 0:
            raise AvatarNotFound(avatar_id)


def _avatar_record(row: tuple[str, bytes, int, int]) -> AvatarRecord:
    avatar_id, blob, created_us, seq = row
    spec = RigSpec.from_proto(rig_pb2.RigSpec.FromString(blob))
    return AvatarRecord(avatar_id, spec, created_us, seq)
