"""The persistent store: one SQLite file (WAL mode) under the data dir (`SqliteStore`, the
default), or a cluster's PostgreSQL (`store_postgres`), both behind `Store`.

Blocking by nature; the services call it through `asyncio.to_thread`. One connection guarded by
a lock keeps writes serial, which is what SQLite does anyway.

Failures name the file and what to do: opening checks the file (`PRAGMA quick_check`, the
schema version, that it can be written) and refuses an unusable one with `StoreUnusable`
instead of starting empty or crashing later; at run time SQLite's errors become `StoreFull`
(the disk is full: that request stored nothing) or `StoreUnusable` (the file is corrupt,
read-only or gone), and the latter also tells `on_unusable` so the server can report health
NOT_SERVING.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from freeavatar._proto import avatar_pb2, job_pb2, rig_pb2
from freeavatar.rig import RigSpec
from freeavatar_server.live.errors import Conflict, Exhausted, NotFound, Unavailable

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


class StorageFailure(StoreError):
    """The store itself failed (not what a request asked of it): StoreFull or StoreUnusable."""

    path: Path | str


class StoreUnusable(StorageFailure, Unavailable):
    """The database cannot be used (corrupt, not a database, read-only, from a newer server,
    unreachable); the message names it (a file, or a PostgreSQL server) and the fix."""

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        super().__init__(f"the database {path} {problem}: {fix}")
        self.path = path


class StoreFull(StorageFailure, Exhausted):
    """The disk holding the data dir is full; the operation that met it stored nothing."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            f"the disk holding {path} is full (SQLite: database or disk is full); nothing of this "
            "request was stored: free space there and try again"
        )
        self.path = path


# What to tell the operator for each SQLite error that makes the database unusable.
_RESTORE = (
    "stop the server and restore the file from a backup, or move it (with its -wal and -shm "
    "files) aside to start with an empty store"
)
_UNUSABLE: dict[str, tuple[str, str]] = {
    "SQLITE_CORRUPT": ("is corrupt", _RESTORE),
    "SQLITE_NOTADB": ("is not an SQLite database", _RESTORE),
    "SQLITE_READONLY": (
        "cannot be written (read-only file, directory or file system)",
        "give the server's user write access to the file and its directory, or point --data-dir elsewhere",
    ),
    "SQLITE_CANTOPEN": ("cannot be opened", "check that the data dir exists and the server's user may write it"),
    "SQLITE_IOERR": ("cannot be read or written (I/O error)", "check the disk; " + _RESTORE),
    "SQLITE_PERM": ("may not be accessed", "give the server's user read and write access to it"),
}


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


class Store(Protocol):
    """What the server keeps: avatars, their samples and keyframes, jobs and model versions.

    Two backends: `SqliteStore` (one file under the data dir: the default, one machine) and
    `store_postgres.PostgresStore` (a cluster's servers share one PostgreSQL). Both are blocking;
    callers on the event loop go through `asyncio.to_thread`.
    """

    problem: StoreUnusable | None  # set once the store is found unusable for good

    def close(self) -> None: ...
    def add_avatar(self, spec: RigSpec) -> AvatarRecord: ...
    def get_avatar(self, avatar_id: str) -> AvatarRecord: ...
    def list_avatars(self, after_seq: int, limit: int) -> list[AvatarRecord]: ...
    def delete_avatar(self, avatar_id: str) -> None: ...
    def avatar_summary(self, avatar_id: str) -> AvatarSummary: ...
    def add_render_samples(self, avatar_id: str, samples: list[tuple[np.ndarray, bytes]]) -> int: ...
    def render_samples(self, avatar_id: str) -> tuple[np.ndarray, list[bytes]]: ...
    def add_keyframes(self, avatar_id: str, keyframes: list[tuple[np.ndarray, bytes]]) -> int: ...
    def keyframes(self, avatar_id: str) -> tuple[np.ndarray, list[bytes]]: ...
    def add_job(self, kind: int, avatar_ids: list[str], options: job_pb2.TrainingOptions) -> JobRecord: ...
    def get_job(self, job_id: str) -> JobRecord: ...
    def list_jobs(self, after_seq: int, limit: int, avatar_id: str = "") -> list[JobRecord]: ...
    def update_job(self, job_id: str, **fields: object) -> JobRecord: ...
    def fail_interrupted_jobs(self, reason: str) -> list[str]: ...
    def publish_model(
        self, job_id: str, avatar_id: str, kind: int, metrics: dict[str, float], path: str
    ) -> ModelVersionRecord: ...
    def model_version(self, avatar_id: str, kind: int, version: int) -> ModelVersionRecord: ...
    def model_versions(self, avatar_id: str, kind: int) -> list[ModelVersionRecord]: ...
    def activate_model(self, avatar_id: str, kind: int, version: int) -> ModelVersionRecord: ...


class SqliteStore:
    def __init__(
        self,
        path: Path,
        on_unusable: Callable[[StoreUnusable], None] | None = None,
        check_integrity: bool = True,
    ) -> None:
        """Open (or create) the database at `path`; StoreUnusable, naming it, if it cannot be used.
        `check_integrity=False` skips `PRAGMA quick_check`, for a job process opening the file
        its server checked at start."""
        self.path = path
        # called (from any thread) when the file turns unusable while serving; opening raises
        self.on_unusable: Callable[[StoreUnusable], None] | None = None
        self.problem: StoreUnusable | None = None  # set once the file is found unusable
        self._lock = threading.Lock()
        self._check_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnusable(path, f"cannot be created ({error.strerror})", "check --data-dir") from None
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as error:
            raise self._translate(error) from None
        try:
            with self._locked() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA foreign_keys=ON")
                # quick_check reads every page (but does not match indexes to tables): one read
                # of the file per start, instead of serving a corrupt one
                problems = [row for (row,) in db.execute("PRAGMA quick_check(5)")] if check_integrity else ["ok"]
            if problems != ["ok"]:
                found = "; ".join(line for row in problems for line in row.splitlines()[:3])
                raise StoreUnusable(path, f"is corrupt (quick_check: {found})", _RESTORE)
            self._migrate()
        except BaseException:
            self._db.close()
            raise
        self.on_unusable = on_unusable

    def _check_file(self) -> None:
        """A zero-byte file is no database, though SQLite would open it as an empty one: a store
        truncated by a crash or a bad copy must not start silently empty."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return  # a new store
        except OSError as error:
            raise StoreUnusable(self.path, f"cannot be read ({error.strerror})", "check its permissions") from None
        if size == 0:
            raise StoreUnusable(
                self.path,
                "is empty (0 bytes), so it holds no FreeAvatar store",
                "restore it from a backup, or delete it to start with an empty store",
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        with self._locked() as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > len(MIGRATIONS):
                raise StoreUnusable(
                    self.path,
                    f"has schema version {version}, newer than this server's {len(MIGRATIONS)}",
                    "run the FreeAvatar version that wrote it, or restore an older backup",
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                # executescript commits on its own; the version bump rides in the same script.
                db.executescript(f"BEGIN; {script} PRAGMA user_version={number}; COMMIT;")
            # Writing the version (unchanged) proves the file can be written: a read-only store
            # is refused here, with its name, instead of at the first upload.
            db.execute(f"PRAGMA user_version={len(MIGRATIONS)}")

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; SQLite's errors become the store's (IntegrityError
        is left to the caller, which knows what it means)."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as error:
                raise self._translate(error) from None

    def _translate(self, error: sqlite3.Error) -> StoreError:
        name = getattr(error, "sqlite_errorname", "") or ""
        if name.startswith("SQLITE_FULL") or _disk_full(error):
            return StoreFull(self.path)
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR")) and _on_read_only_file_system(self.path):
            # WAL mode needs its -wal and -shm files beside the database: on a read-only mount
            # SQLite says only "unable to open database file"
            name = "SQLITE_READONLY"
        problem, fix = next(
            (found for code, found in _UNUSABLE.items() if name.startswith(code)),
            (f"failed ({error})", "check the disk and the file; " + _RESTORE),
        )
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            # another process holds the file (a second server on the same data dir)
            return StoreUnusable(self.path, f"is locked by another process ({error})", "run one server per data dir")
        unusable = StoreUnusable(self.path, f"{problem} ({error})", fix)
        if self.problem is None:
            self.problem = unusable
            if self.on_unusable is not None:
                self.on_unusable(unusable)
        return unusable

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._locked() as db:
            db.execute("BEGIN")
            try:
                yield db
                db.execute("COMMIT")  # a full disk may fail here, with the transaction still open
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back on its own
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    # Avatars

    def add_avatar(self, spec: RigSpec) -> AvatarRecord:
        avatar_id = uuid.uuid4().hex
        created_us = now_us()
        blob = spec.to_proto().SerializeToString()
        with self._locked():
            try:
                cursor = self._db.execute(
                    "INSERT INTO avatars (id, name, spec, created_us) VALUES (?, ?, ?, ?)",
                    (avatar_id, spec.name, blob, created_us),
                )
            except sqlite3.IntegrityError:
                raise AvatarNameTaken(spec.name) from None
        return AvatarRecord(avatar_id, spec, created_us, cursor.lastrowid or 0)

    def get_avatar(self, avatar_id: str) -> AvatarRecord:
        with self._locked():
            row = self._db.execute(
                "SELECT id, spec, created_us, rowid FROM avatars WHERE id = ?", (avatar_id,)
            ).fetchone()
        if row is None:
            raise AvatarNotFound(avatar_id)
        return avatar_record(row)

    def list_avatars(self, after_seq: int, limit: int) -> list[AvatarRecord]:
        with self._locked():
            rows = self._db.execute(
                "SELECT id, spec, created_us, rowid FROM avatars WHERE rowid > ? "
                "ORDER BY rowid LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [avatar_record(row) for row in rows]

    def delete_avatar(self, avatar_id: str) -> None:
        with self._locked():
            cursor = self._db.execute("DELETE FROM avatars WHERE id = ?", (avatar_id,))
        if cursor.rowcount == 0:
            raise AvatarNotFound(avatar_id)


    def avatar_summary(self, avatar_id: str) -> AvatarSummary:
        with self._locked():
            (samples,) = self._db.execute(
                "SELECT COUNT(*) FROM render_samples WHERE avatar_id = ?", (avatar_id,)
            ).fetchone()
            (keyframes,) = self._db.execute(
                "SELECT COUNT(*) FROM keyframes WHERE avatar_id = ?", (avatar_id,)
            ).fetchone()
            rows = self._db.execute(
                f"SELECT {VERSION_COLUMNS} FROM model_versions WHERE avatar_id = ? AND active = 1",
                (avatar_id,),
            ).fetchall()
        active = {record.kind: record for record in map(version_record, rows)}
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
        with self._locked():
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
        with self._locked():
            rows = self._db.execute(
                "SELECT rig, image FROM keyframes WHERE avatar_id = ? ORDER BY rowid", (avatar_id,)
            ).fetchall()
        rigs = np.array([np.frombuffer(rig, "<f4") for rig, _ in rows], dtype=np.float32)
        return rigs, [image for _, image in rows]

    # Jobs

    def add_job(self, kind: int, avatar_ids: list[str], options: job_pb2.TrainingOptions) -> JobRecord:
        job_id = uuid.uuid4().hex
        with self._locked():
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
        with self._locked():
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return job_record(row)

    def list_jobs(self, after_seq: int, limit: int, avatar_id: str = "") -> list[JobRecord]:
        query = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE rowid > ?"
        args: list[object] = [after_seq]
        if avatar_id:
            query += " AND EXISTS (SELECT 1 FROM json_each(avatar_ids) WHERE value = ?)"
            args.append(avatar_id)
        with self._locked():
            rows = self._db.execute(f"{query} ORDER BY rowid LIMIT ?", (*args, limit)).fetchall()
        return [job_record(row) for row in rows]

    def update_job(self, job_id: str, **fields: object) -> JobRecord:
        """Set job columns (state, progress, metrics, error, started_us, ended_us)."""
        if "metrics" in fields:
            fields["metrics"] = json.dumps(fields["metrics"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._locked():
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))
        return self.get_job(job_id)

    def fail_interrupted_jobs(self, reason: str) -> list[str]:
        """Mark jobs left RUNNING by a server that died as FAILED; return the QUEUED ones' ids."""
        with self._locked():
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
                    f"INSERT INTO model_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
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
        with self._locked():
            row = self._db.execute(
                f"SELECT {VERSION_COLUMNS} FROM model_versions "
                "WHERE avatar_id = ? AND kind = ? AND version = ?",
                (avatar_id, kind, version),
            ).fetchone()
        if row is None:
            raise ModelVersionNotFound(avatar_id, kind, version)
        return version_record(row)

    def model_versions(self, avatar_id: str, kind: int) -> list[ModelVersionRecord]:
        with self._locked():
            rows = self._db.execute(
                f"SELECT {VERSION_COLUMNS} FROM model_versions "
                "WHERE avatar_id = ? AND kind = ? ORDER BY version",
                (avatar_id, kind),
            ).fetchall()
        return [version_record(row) for row in rows]

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
VERSION_COLUMNS = "avatar_id, kind, version, job_id, created_us, metrics, path, active"


def _on_read_only_file_system(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _disk_full(error: BaseException) -> bool:
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "disk is full" in str(error)


def now_us() -> int:
    return time.time_ns() // 1000


def job_record(row: tuple, load_json: Callable[[Any], Any] = json.loads) -> JobRecord:
    """A jobs row as a JobRecord. `load_json` decodes its JSON columns: SQLite hands them over
    as text, PostgreSQL already decoded."""
    (job_id, kind, state, avatar_ids, options, progress, metrics, error, *times, result, seq) = row
    return JobRecord(
        id=job_id,
        kind=kind,
        state=state,
        avatar_ids=tuple(load_json(avatar_ids)),
        options=job_pb2.TrainingOptions.FromString(bytes(options)),
        progress=progress,
        metrics=dict(load_json(metrics)),
        error=error,
        created_us=times[0],
        started_us=times[1],
        ended_us=times[2],
        result_version=result,
        seq=seq,
    )


def version_record(row: tuple, load_json: Callable[[Any], Any] = json.loads) -> ModelVersionRecord:
    avatar_id, kind, version, job_id, created_us, metrics, path, active = row
    return ModelVersionRecord(
        avatar_id, kind, version, job_id, created_us, dict(load_json(metrics)), path, bool(active)
    )


def avatar_record(row: tuple[str, bytes, int, int]) -> AvatarRecord:
    avatar_id, blob, created_us, seq = row
    spec = RigSpec.from_proto(rig_pb2.RigSpec.FromString(bytes(blob)))
    return AvatarRecord(avatar_id, spec, created_us, seq)
