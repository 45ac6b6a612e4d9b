"""The persistent store: one SQLite file (WAL mode) under the data dir.

Blocking by nature; the services call it through `asyncio.to_thread`. One connection guarded by
a lock keeps writes serial, which is what SQLite does anyway.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freeavatar._proto import avatar_pb2, job_pb2, rig_pb2
from freeavatar.rig import RigSpec
from freeavatar_server.live.errors import Conflict, NotFound

TERMINAL_JOB_STATES = frozenset(
    (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)
)

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
    """
    CREATE TABLE render_samples (
        avatar_id TEXT NOT NULL REFERENCES avatars(id) ON DELETE CASCADE,
        rig BLOB NOT NULL,           -- float32 values in rig-spec order
        image BLOB NOT NULL          -- PNG or JPEG as uploaded (checked to decode)
    );
    CREATE INDEX render_samples_by_avatar ON render_samples(avatar_id);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind INTEGER NOT NULL,       -- freeavatar.v1.JobKind
        state INTEGER NOT NULL,      -- freeavatar.v1.JobState
        avatar_ids TEXT NOT NULL,    -- JSON list
        options BLOB NOT NULL,       -- a serialized freeavatar.v1.TrainingOptions
        progress REAL NOT NULL DEFAULT 0,
        metrics TEXT NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT '',
        created_us INTEGER NOT NULL,
        started_us INTEGER,
        ended_us INTEGER,
        result_version INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE model_versions (
        avatar_id TEXT NOT NULL REFERENCES avatars(id) ON DELETE CASCADE,
        kind INTEGER NOT NULL,       -- freeavatar.v1.ModelKind
        version INTEGER NOT NULL,
        job_id TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        metrics TEXT NOT NULL,       -- JSON object
        path TEXT NOT NULL,          -- model directory, relative to the data dir
        active INTEGER NOT NULL,
        PRIMARY KEY (avatar_id, kind, version)
    );
    """,
    """
    CREATE TABLE keyframes (
        avatar_id TEXT NOT NULL REFERENCES avatars(id) ON DELETE CASCADE,
        rig BLOB NOT NULL,           -- float32 values in rig-spec order, as the artist posed
        image BLOB NOT NULL          -- the actor image, PNG or JPEG as uploaded
    );
    CREATE INDEX keyframes_by_avatar ON keyframes(avatar_id);
    """,
)


class StoreError(Exception):
    pass


class JobNotFound(StoreError, NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")


class ModelVersionNotFound(StoreError, NotFound):
    def __init__(self, avatar_id: str, kind: int, version: int) -> None:
        kind_name = avatar_pb2.ModelKind.Name(kind).removeprefix("MODEL_KIND_").lower()
        super().__init__(f"avatar {avatar_id!r} has no {kind_name} version {version}")


class AvatarNotFound(StoreError, NotFound):
    def __init__(self, avatar_id: str) -> None:
        super().__init__(f"no avatar with id {avatar_id!r}")


class AvatarNameTaken(StoreError, Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"an avatar named {name!r} is already registered")


@dataclass(frozen=True)
class AvatarRecord:
    id: str
    spec: RigSpec
    created_us: int
    seq: int  # insertion order, for paging


@dataclass(frozen=True)
class ModelVersionRecord:
    avatar_id: str
    kind: int  # freeavatar.v1.ModelKind
    version: int
    job_id: str
    created_us: int
    metrics: dict[str, float]
    path: str  # model directory, relative to the data dir
    active: bool


@dataclass(frozen=True)
class AvatarSummary:
    """What an Avatar message reports beside the spec."""

    render_samples: int
    renderer: ModelVersionRecord | None
    animator: ModelVersionRecord | None
    keyframes: int = 0


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: int  # freeavatar.v1.JobKind
    state: int  # freeavatar.v1.JobState
    avatar_ids: tuple[str, ...]
    options: job_pb2.TrainingOptions
    progress: float
    metrics: dict[str, float]
    error: str
    created_us: int
    started_us: int | None
    ended_us: int | None
    result_version: int
    seq: int

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_JOB_STATES


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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # Avatars

    def add_avatar(self, spec: RigSpec) -> AvatarRecord:
        avatar_id = uuid.uuid4().hex
        created_us = now_us()
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


    def avatar_summary(self, avatar_id: str) -> AvatarSummary:
        with self._lock:
            (samples,) = self._db.execute(
                "SELECT COUNT(*) FROM render_samples WHERE avatar_id = ?", (avatar_id,)
            ).fetchone()
            (keyframes,) = self._db.execute(
                "SELECT COUNT(*) FROM keyframes WHERE avatar_id = ?", (avatar_id,)
            ).fetchone()
            rows = self._db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE avatar_id = ? AND active = 1",
                (avatar_id,),
            ).fetchall()
        active = {record.kind: record for record in map(_version_record, rows)}
        return AvatarSummary(
            render_samples=samples,
            renderer=active.get(avatar_pb2.MODEL_KIND_RENDERER),
            animator=active.get(avatar_pb2.MODEL_KIND_ANIMATOR),
            keyframes=keyframes,
        )

    # Render samples

    def add_render_samples(self, avatar_id: str, samples: list[tuple[np.ndarray, bytes]]) -> int:
        """Store (rig, encoded image) pairs in one transaction; returns the avatar's total."""
        rows = [(avatar_id, rig.astype("<f4").tobytes(), image) for rig, image in samples]
        try:
            with self._transaction() as db:
                db.executemany(
                    "INSERT INTO render_samples (avatar_id, rig, image) VALUES (?, ?, ?)", rows
                )
                (total,) = db.execute(
                    "SELECT COUNT(*) FROM render_samples WHERE avatar_id = ?", (avatar_id,)
                ).fetchone()
        except sqlite3.IntegrityError:
            raise AvatarNotFound(avatar_id) from None
        return int(total)

    def render_samples(self, avatar_id: str) -> tuple[np.ndarray, list[bytes]]:
        """All of an avatar's samples: rigs (N, controls) float32 and the encoded images."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rig, image FROM render_samples WHERE avatar_id = ? ORDER BY rowid",
                (avatar_id,),
            ).fetchall()
        rigs = np.array([np.frombuffer(rig, "<f4") for rig, _ in rows], dtype=np.float32)
        return rigs, [image for _, image in rows]

    # Keyframes (an actor image and the rig an artist posed for it)

    def add_keyframes(self, avatar_id: str, keyframes: list[tuple[np.ndarray, bytes]]) -> int:
        """Store (rig, encoded actor image) pairs in one transaction; returns the avatar's total."""
        rows = [(avatar_id, rig.astype("<f4").tobytes(), image) for rig, image in keyframes]
        try:
            with self._transaction() as db:
                db.executemany("INSERT INTO keyframes (avatar_id, rig, image) VALUES (?, ?, ?)", rows)
                (total,) = db.execute(
                    "SELECT COUNT(*) FROM keyframes WHERE avatar_id = ?", (avatar_id,)
                ).fetchone()
        except sqlite3.IntegrityError:
            raise AvatarNotFound(avatar_id) from None
        return int(total)

    def keyframes(self, avatar_id: str) -> tuple[np.ndarray, list[bytes]]:
        """All of an avatar's keyframes, oldest first: rigs (N, controls) float32 and images."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rig, image FROM keyframes WHERE avatar_id = ? ORDER BY rowid", (avatar_id,)
            ).fetchall()
        rigs = np.array([np.frombuffer(rig, "<f4") for rig, _ in rows], dtype=np.float32)
        return rigs, [image for _, image in rows]

    # Jobs

    def add_job(self, kind: int, avatar_ids: list[str], options: job_pb2.TrainingOptions) -> JobRecord:
        job_id = uuid.uuid4().hex
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, kind, state, avatar_ids, options, created_us) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    kind,
                    job_pb2.JOB_STATE_QUEUED,
                    json.dumps(avatar_ids),
                    options.SerializeToString(),
                    now_us(),
                ),
            )
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> JobRecord:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job_record(row)

    def list_jobs(self, after_seq: int, limit: int, avatar_id: str = "") -> list[JobRecord]:
        query = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE rowid > ?"
        args: list[object] = [after_seq]
        if avatar_id:
            query += " AND EXISTS (SELECT 1 FROM json_each(avatar_ids) WHERE value = ?)"
            args.append(avatar_id)
        with self._lock:
            rows = self._db.execute(f"{query} ORDER BY rowid LIMIT ?", (*args, limit)).fetchall()
        return [_job_record(row) for row in rows]

    def update_job(self, job_id: str, **fields: object) -> JobRecord:
        """Set job columns (state, progress, metrics, error, started_us, ended_us)."""
        if "metrics" in fields:
            fields["metrics"] = json.dumps(fields["metrics"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))
        return self.get_job(job_id)

    def fail_interrupted_jobs(self, reason: str) -> list[str]:
        """Mark jobs left RUNNING by a server that died as FAILED; return the QUEUED ones' ids."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, error = ?, ended_us = ? WHERE state = ?",
                (job_pb2.JOB_STATE_FAILED, reason, now_us(), job_pb2.JOB_STATE_RUNNING),
            )
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE state = ? ORDER BY rowid", (job_pb2.JOB_STATE_QUEUED,)
            ).fetchall()
        return [job_id for (job_id,) in rows]

    # Model versions

    def publish_model(
        self, job_id: str, avatar_id: str, kind: int, metrics: dict[str, float], path: str
    ) -> ModelVersionRecord:
        """In one transaction: add the next version, make it active, and mark the job done."""
        try:
            with self._transaction() as db:
                (latest,) = db.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM model_versions "
                    "WHERE avatar_id = ? AND kind = ?",
                    (avatar_id, kind),
                ).fetchone()
                version = latest + 1
                db.execute(
                    "UPDATE model_versions SET active = 0 WHERE avatar_id = ? AND kind = ?",
                    (avatar_id, kind),
                )
                db.execute(
                    f"INSERT INTO model_versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (avatar_id, kind, version, job_id, now_us(), json.dumps(metrics), path),
                )
                db.execute(
                    "UPDATE jobs SET state = ?, progress = 1, metrics = ?, ended_us = ?, "
                    "result_version = ? WHERE id = ?",
                    (job_pb2.JOB_STATE_SUCCEEDED, json.dumps(metrics), now_us(), version, job_id),
                )
        except sqlite3.IntegrityError:
            raise AvatarNotFound(avatar_id) from None
        return self.model_version(avatar_id, kind, version)

    def model_version(self, avatar_id: str, kind: int, version: int) -> ModelVersionRecord:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM model_versions "
                "WHERE avatar_id = ? AND kind = ? AND version = ?",
                (avatar_id, kind, version),
            ).fetchone()
        if row is None:
            raise ModelVersionNotFound(avatar_id, kind, version)
        return _version_record(row)

    def model_versions(self, avatar_id: str, kind: int) -> list[ModelVersionRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM model_versions "
                "WHERE avatar_id = ? AND kind = ? ORDER BY version",
                (avatar_id, kind),
            ).fetchall()
        return [_version_record(row) for row in rows]

    def activate_model(self, avatar_id: str, kind: int, version: int) -> ModelVersionRecord:
        self.model_version(avatar_id, kind, version)  # raises when missing
        with self._transaction() as db:
            db.execute(
                "UPDATE model_versions SET active = (version = ?) WHERE avatar_id = ? AND kind = ?",
                (version, avatar_id, kind),
            )
        return self.model_version(avatar_id, kind, version)


_JOB_COLUMNS = (
    "id, kind, state, avatar_ids, options, progress, metrics, error, "
    "created_us, started_us, ended_us, result_version, rowid"
)
_VERSION_COLUMNS = "avatar_id, kind, version, job_id, created_us, metrics, path, active"


def now_us() -> int:
    return time.time_ns() // 1000


def _job_record(row: tuple) -> JobRecord:
    (job_id, kind, state, avatar_ids, options, progress, metrics, error, *times, result, seq) = row
    return JobRecord(
        id=job_id,
        kind=kind,
        state=state,
        avatar_ids=tuple(json.loads(avatar_ids)),
        options=job_pb2.TrainingOptions.FromString(options),
        progress=progress,
        metrics=json.loads(metrics),
        error=error,
        created_us=times[0],
        started_us=times[1],
        ended_us=times[2],
        result_version=result,
        seq=seq,
    )


def _version_record(row: tuple) -> ModelVersionRecord:
    avatar_id, kind, version, job_id, created_us, metrics, path, active = row
    return ModelVersionRecord(
        avatar_id, kind, version, job_id, created_us, json.loads(metrics), path, bool(active)
    )


def _avatar_record(row: tuple[str, bytes, int, int]) -> AvatarRecord:
    avatar_id, blob, created_us, seq = row
    spec = RigSpec.from_proto(rig_pb2.RigSpec.FromString(blob))
    return AvatarRecord(avatar_id, spec, created_us, seq)
