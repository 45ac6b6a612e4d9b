"""The store of a cluster: every server of it shares one PostgreSQL database (psycopg 3).

The same records as `store.SqliteStore` (the `Store` interface), plus what only a cluster needs:
the servers alive (heartbeats), jobs claimed by one server (`FOR UPDATE SKIP LOCKED`), and the
live sessions and their actors, so an actor can stream to any server of the cluster.

Model files are not in here: they sit in the data dir, which every server of a cluster mounts
(docs/cluster.md says why). Credentials never come in the URL: libpq reads PGPASSWORD or a
password file (PGPASSFILE, ~/.pgpass), so nothing secret is on a command line or in a log.

One connection under a lock, as with SQLite: the store's calls are small and the live path
never waits on them. A connection that breaks is reopened by the next call; until then calls get
`StoreUnusable` (gRPC UNAVAILABLE) naming the server and what to check.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from freeavatar._proto import avatar_pb2, job_pb2
from freeavatar.rig import RigSpec
from freeavatar_server.store import (
    VERSION_COLUMNS,
    AvatarNameTaken,
    AvatarNotFound,
    AvatarRecord,
    AvatarSummary,
    JobNotFound,
    JobRecord,
    ModelVersionNotFound,
    ModelVersionRecord,
    StoreError,
    StoreFull,
    StoreUnusable,
    avatar_record,
    job_record,
    now_us,
    version_record,
)

CONNECT_TIMEOUT_S = 3
# Any constant: the key of the advisory lock that lets one server at a time migrate the schema.
MIGRATION_LOCK = 0x46415641

# Each entry upgrades the schema by one version (the row in freeavatar_schema); append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE avatars (
        seq BIGSERIAL UNIQUE,        -- insertion order, for paging
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        spec BYTEA NOT NULL,         -- a serialized freeavatar.v1.RigSpec
        created_us BIGINT NOT NULL
    );
    CREATE TABLE render_samples (
        seq BIGSERIAL PRIMARY KEY,
        avatar_id TEXT NOT NULL REFERENCES avatars(id) ON DELETE CASCADE,
        rig BYTEA NOT NULL,          -- float32 values in rig-spec order
        image BYTEA NOT NULL         -- PNG or JPEG as uploaded (checked to decode)
    );
    CREATE INDEX render_samples_by_avatar ON render_samples(avatar_id);
    CREATE TABLE keyframes (
        seq BIGSERIAL PRIMARY KEY,
        avatar_id TEXT NOT NULL REFERENCES avatars(id) ON DELETE CASCADE,
        rig BYTEA NOT NULL,
        image BYTEA NOT NULL
    );
    CREATE INDEX keyframes_by_avatar ON keyframes(avatar_id);
    CREATE TABLE jobs (
        seq BIGSERIAL UNIQUE,
        id TEXT PRIMARY KEY,
        kind INTEGER NOT NULL,       -- freeavatar.v1.JobKind
        state INTEGER NOT NULL,      -- freeavatar.v1.JobState
        avatar_ids JSONB NOT NULL,   -- a list of ids
        options BYTEA NOT NULL,      -- a serialized freeavatar.v1.TrainingOptions
        progress DOUBLE PRECISION NOT NULL DEFAULT 0,
        metrics JSONB NOT NULL DEFAULT '{}',
        error TEXT NOT NULL DEFAULT '',
        created_us BIGINT NOT NULL,
        started_us BIGINT,
        ended_us BIGINT,
        result_version INTEGER NOT NULL DEFAULT 0,
        server_id TEXT               -- the server that claimed it (NULL: nobody yet)
    );
    CREATE INDEX jobs_queued ON jobs(seq) WHERE state = 1;
    CREATE TABLE model_versions (
        avatar_id TEXT NOT NULL REFERENCES avatars(id) ON DELETE CASCADE,
        kind INTEGER NOT NULL,       -- freeavatar.v1.ModelKind
        version INTEGER NOT NULL,
        job_id TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        metrics JSONB NOT NULL,
        path TEXT NOT NULL,          -- model directory, relative to the shared data dir
        active BOOLEAN NOT NULL,
        PRIMARY KEY (avatar_id, kind, version)
    );
    CREATE TABLE servers (           -- the cluster's servers, while they beat
        id TEXT PRIMARY KEY,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE sessions (          -- live sessions (not private ones), shared by every server
        seq BIGSERIAL UNIQUE,
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        token TEXT NOT NULL,
        created_us BIGINT NOT NULL
    );
    CREATE TABLE actors (
        seq BIGSERIAL UNIQUE,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        actor BYTEA NOT NULL,        -- a serialized freeavatar.v1.Actor: name and bindings
        PRIMARY KEY (session_id, id)
    );
    """,
)


@dataclass(frozen=True)
class SessionRecord:
    id: str
    name: str
    token: str
    created_us: int
    actors: tuple[bytes, ...]  # serialized freeavatar.v1.Actor, in the order they joined


def describe(url: str) -> str:
    """The database as logs and errors name it: user, host, port and name, never a password."""
    parts = conninfo_to_dict(url)
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"PostgreSQL {user}{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def has_password(url: str) -> bool:
    return bool(conninfo_to_dict(url).get("password"))


class PostgresStore:
    def __init__(self, url: str) -> None:
        """Connect and bring the schema up to date; StoreUnusable, naming the server, if not."""
        self.url = url
        self.where = describe(url)
        self.problem: StoreUnusable | None = None  # PostgreSQL's failures pass: see `ping`
        self._lock = threading.Lock()
        self._connection: psycopg.Connection | None = None
        self._migrate()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def ping(self) -> None:
        """StoreUnusable unless the database answers now (the health check asks every second)."""
        with self._locked() as db:
            db.execute("SELECT 1")

    def _connect(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed or self._connection.broken:
            self._connection = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        return self._connection

    @contextmanager
    def _locked(self) -> Iterator[psycopg.Connection]:
        """The connection, under the lock; PostgreSQL's failures become the store's (integrity
        errors are left to the caller, which knows what they mean)."""
        with self._lock:
            try:
                yield self._connect()
            except psycopg.errors.IntegrityError:
                raise
            except psycopg.errors.DiskFull:
                raise StoreFull(self.where) from None  # type: ignore[arg-type]
            except psycopg.OperationalError as error:
                if self._connection is not None and self._connection.broken:
                    self._connection = None
                raise StoreUnusable(
                    self.where,
                    f"cannot be reached ({_first_line(error)})",
                    "check that PostgreSQL runs and lets this server in (password from PGPASSWORD "
                    "or PGPASSFILE); calls work again as soon as it does",
                ) from None
            except psycopg.Error as error:
                raise StoreUnusable(self.where, f"failed ({_first_line(error)})", "check the database") from None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        with self._locked() as db, db.transaction():
            yield db

    def _migrate(self) -> None:
        with self._transaction() as db:
            # servers starting together: one migrates, the others wait here and find it done
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS freeavatar_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM freeavatar_schema").fetchone()
            version = row[0] if row else 0
            if row is None:
                db.execute("INSERT INTO freeavatar_schema (version) VALUES (0)")
            if version > len(MIGRATIONS):
                raise StoreUnusable(
                    self.where,
                    f"has schema version {version}, newer than this server's {len(MIGRATIONS)}",
                    "run the FreeAvatar version that wrote it, or restore an older backup",
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                db.execute(script)
                db.execute("UPDATE freeavatar_schema SET version = %s", (number,))

    # Avatars

    def add_avatar(self, spec: RigSpec) -> AvatarRecord:
        avatar_id = uuid.uuid4().hex
        created_us = now_us()
        blob = spec.to_proto().SerializeToString()
        with self._locked() as db:
            try:
                (seq,) = db.execute(
                    "INSERT INTO avatars (id, name, spec, created_us) VALUES (%s, %s, %s, %s) RETURNING seq",
                    (avatar_id, spec.name, blob, created_us),
                ).fetchone()
            except psycopg.errors.UniqueViolation:
                raise AvatarNameTaken(spec.name) from None
        return AvatarRecord(avatar_id, spec, created_us, seq)

    def get_avatar(self, avatar_id: str) -> AvatarRecord:
        with self._locked() as db:
            row = db.execute("SELECT id, spec, created_us, seq FROM avatars WHERE id = %s", (avatar_id,)).fetchone()
        if row is None:
            raise AvatarNotFound(avatar_id)
        return avatar_record(row)

    def list_avatars(self, after_seq: int, limit: int) -> list[AvatarRecord]:
        with self._locked() as db:
            rows = db.execute(
                "SELECT id, spec, created_us, seq FROM avatars WHERE seq > %s ORDER BY seq LIMIT %s",
                (after_seq, limit),
            ).fetchall()
        return [avatar_record(row) for row in rows]

    def delete_avatar(self, avatar_id: str) -> None:
        with self._locked() as db:
            cursor = db.execute("DELETE FROM avatars WHERE id = %s", (avatar_id,))
        if cursor.rowcount == 0:
            raise AvatarNotFound(avatar_id)

    def avatar_summary(self, avatar_id: str) -> AvatarSummary:
        with self._locked() as db:
            (samples,) = db.execute(
                "SELECT COUNT(*) FROM render_samples WHERE avatar_id = %s", (avatar_id,)
            ).fetchone()
            (keyframes,) = db.execute("SELECT COUNT(*) FROM keyframes WHERE avatar_id = %s", (avatar_id,)).fetchone()
            rows = db.execute(
                f"SELECT {VERSION_COLUMNS} FROM model_versions WHERE avatar_id = %s AND active", (avatar_id,)
            ).fetchall()
        active = {record.kind: record for record in map(_version_record, rows)}
        return AvatarSummary(
            render_samples=samples,
            renderer=active.get(avatar_pb2.MODEL_KIND_RENDERER),
            animator=active.get(avatar_pb2.MODEL_KIND_ANIMATOR),
            keyframes=keyframes,
        )

    # Render samples and keyframes: (rig, encoded image) pairs per avatar

    def add_render_samples(self, avatar_id: str, samples: list[tuple[np.ndarray, bytes]]) -> int:
        return self._add_pairs("render_samples", avatar_id, samples)

    def render_samples(self, avatar_id: str) -> tuple[np.ndarray, list[bytes]]:
        return self._pairs("render_samples", avatar_id)

    def add_keyframes(self, avatar_id: str, keyframes: list[tuple[np.ndarray, bytes]]) -> int:
        return self._add_pairs("keyframes", avatar_id, keyframes)

    def keyframes(self, avatar_id: str) -> tuple[np.ndarray, list[bytes]]:
        return self._pairs("keyframes", avatar_id)

    def _add_pairs(self, table: str, avatar_id: str, pairs: list[tuple[np.ndarray, bytes]]) -> int:
        rows = [(avatar_id, rig.astype("<f4").tobytes(), image) for rig, image in pairs]
        try:
            with self._transaction() as db:
                with db.cursor() as cursor:
                    cursor.executemany(f"INSERT INTO {table} (avatar_id, rig, image) VALUES (%s, %s, %s)", rows)
                (total,) = db.execute(f"SELECT COUNT(*) FROM {table} WHERE avatar_id = %s", (avatar_id,)).fetchone()
        except psycopg.errors.ForeignKeyViolation:
            raise AvatarNotFound(avatar_id) from None
        return int(total)

    def _pairs(self, table: str, avatar_id: str) -> tuple[np.ndarray, list[bytes]]:
        with self._locked() as db:
            rows = db.execute(f"SELECT rig, image FROM {table} WHERE avatar_id = %s ORDER BY seq", (avatar_id,)).fetchall()
        rigs = np.array([np.frombuffer(rig, "<f4") for rig, _ in rows], dtype=np.float32)
        return rigs, [bytes(image) for _, image in rows]

    # Jobs

    def add_job(self, kind: int, avatar_ids: list[str], options: job_pb2.TrainingOptions) -> JobRecord:
        job_id = uuid.uuid4().hex
        with self._locked() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, state, avatar_ids, options, created_us) VALUES (%s, %s, %s, %s, %s, %s)",
                (job_id, kind, job_pb2.JOB_STATE_QUEUED, Jsonb(avatar_ids), options.SerializeToString(), now_us()),
            )
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> JobRecord:
        with self._locked() as db:
            row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job_record(row)

    def list_jobs(self, after_seq: int, limit: int, avatar_id: str = "") -> list[JobRecord]:
        query = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE seq > %s"
        args: list[object] = [after_seq]
        if avatar_id:
            query += " AND avatar_ids ? %s"
            args.append(avatar_id)
        with self._locked() as db:
            rows = db.execute(f"{query} ORDER BY seq LIMIT %s", (*args, limit)).fetchall()
        return [_job_record(row) for row in rows]

    def update_job(self, job_id: str, **fields: object) -> JobRecord:
        """Set job columns (state, progress, metrics, error, started_us, ended_us)."""
        if "metrics" in fields:
            fields["metrics"] = Jsonb(fields["metrics"])
        for name in fields:
            if name not in _JOB_FIELDS:
                raise StoreError(f"jobs have no column {name!r}")
        assignments = ", ".join(f"{name} = %s" for name in fields)
        with self._locked() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = %s", (*fields.values(), job_id))
        return self.get_job(job_id)

    def fail_interrupted_jobs(self, reason: str) -> list[str]:
        """Fail the jobs of servers that stopped beating (see `reap_jobs`); returns the ids of
        the jobs still queued."""
        self.reap_jobs(stale_after_s=0.0, reason=reason)
        with self._locked() as db:
            rows = db.execute("SELECT id FROM jobs WHERE state = %s ORDER BY seq", (job_pb2.JOB_STATE_QUEUED,)).fetchall()
        return [job_id for (job_id,) in rows]

    # Jobs across servers: claims and heartbeats

    def heartbeat(self, server_id: str) -> None:
        with self._locked() as db:
            db.execute(
                "INSERT INTO servers (id) VALUES (%s) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
                (server_id,),
            )

    def leave_cluster(self, server_id: str) -> None:
        with self._locked() as db:
            db.execute("DELETE FROM servers WHERE id = %s", (server_id,))

    def claim_job(self, server_id: str) -> str | None:
        """The oldest queued job nobody has claimed, now claimed by `server_id` (it is still
        QUEUED until that server starts it); None if there is none. Servers claiming together
        each get another job: SKIP LOCKED passes over rows another transaction holds."""
        with self._locked() as db:
            row = db.execute(
                "UPDATE jobs SET server_id = %s WHERE id = ("
                "  SELECT id FROM jobs WHERE state = %s AND server_id IS NULL"
                "  ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
                ") RETURNING id",
                (server_id, job_pb2.JOB_STATE_QUEUED),
            ).fetchone()
        return row[0] if row else None

    def reap_jobs(self, stale_after_s: float, reason: str) -> list[str]:
        """Jobs of servers silent for `stale_after_s` (or gone): running ones FAILED with
        `reason` (which may name the server as {server}), claimed but unstarted ones back in the
        queue; forget those servers. Returns the ids of the jobs failed."""
        alive = "SELECT id FROM servers WHERE heartbeat_at >= now() - make_interval(secs => %s)"
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT id, server_id FROM jobs WHERE state = %s AND (server_id IS NULL OR server_id NOT IN ({alive})) "
                "FOR UPDATE SKIP LOCKED",
                (job_pb2.JOB_STATE_RUNNING, stale_after_s),
            ).fetchall()
            for job_id, server_id in rows:
                db.execute(
                    "UPDATE jobs SET state = %s, error = %s, ended_us = %s WHERE id = %s",
                    (job_pb2.JOB_STATE_FAILED, reason.format(server=server_id or "?"), now_us(), job_id),
                )
            db.execute(
                f"UPDATE jobs SET server_id = NULL WHERE state = %s AND server_id IS NOT NULL AND server_id NOT IN ({alive})",
                (job_pb2.JOB_STATE_QUEUED, stale_after_s),
            )
            db.execute("DELETE FROM servers WHERE heartbeat_at < now() - make_interval(secs => %s)", (stale_after_s,))
        return [job_id for job_id, _ in rows]

    # Model versions

    def publish_model(
        self, job_id: str, avatar_id: str, kind: int, metrics: dict[str, float], path: str
    ) -> ModelVersionRecord:
        """In one transaction: add the next version, make it active, and mark the job done."""
        try:
            with self._transaction() as db:
                # one publisher per avatar and kind at a time: versions never collide
                db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{avatar_id}/{kind}",))
                (latest,) = db.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE avatar_id = %s AND kind = %s",
                    (avatar_id, kind),
                ).fetchone()
                version = latest + 1
                db.execute("UPDATE model_versions SET active = FALSE WHERE avatar_id = %s AND kind = %s", (avatar_id, kind))
                db.execute(
                    f"INSERT INTO model_versions ({VERSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, TRUE)",
                    (avatar_id, kind, version, job_id, now_us(), Jsonb(metrics), path),
                )
                db.execute(
                    "UPDATE jobs SET state = %s, progress = 1, metrics = %s, ended_us = %s, result_version = %s "
                    "WHERE id = %s",
                    (job_pb2.JOB_STATE_SUCCEEDED, Jsonb(metrics), now_us(), version, job_id),
                )
        except psycopg.errors.ForeignKeyViolation:
            raise AvatarNotFound(avatar_id) from None
        return self.model_version(avatar_id, kind, version)

    def model_version(self, avatar_id: str, kind: int, version: int) -> ModelVersionRecord:
        with self._locked() as db:
            row = db.execute(
                f"SELECT {VERSION_COLUMNS} FROM model_versions WHERE avatar_id = %s AND kind = %s AND version = %s",
                (avatar_id, kind, version),
            ).fetchone()
        if row is None:
            raise ModelVersionNotFound(avatar_id, kind, version)
        return _version_record(row)

    def model_versions(self, avatar_id: str, kind: int) -> list[ModelVersionRecord]:
        with self._locked() as db:
            rows = db.execute(
                f"SELECT {VERSION_COLUMNS} FROM model_versions WHERE avatar_id = %s AND kind = %s ORDER BY version",
                (avatar_id, kind),
            ).fetchall()
        return [_version_record(row) for row in rows]

    def activate_model(self, avatar_id: str, kind: int, version: int) -> ModelVersionRecord:
        self.model_version(avatar_id, kind, version)  # raises when missing
        with self._locked() as db:
            db.execute(
                "UPDATE model_versions SET active = (version = %s) WHERE avatar_id = %s AND kind = %s",
                (version, avatar_id, kind),
            )
        return self.model_version(avatar_id, kind, version)

    # Live sessions

    def save_session(self, session_id: str, name: str, token: str, created_us: int) -> None:
        with self._locked() as db:
            db.execute(
                "INSERT INTO sessions (id, name, token, created_us) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (session_id, name, token, created_us),
            )

    def delete_session(self, session_id: str) -> None:
        with self._locked() as db:
            db.execute("DELETE FROM sessions WHERE id = %s", (session_id,))

    def save_actor(self, session_id: str, actor_id: str, actor: bytes) -> None:
        """An actor that joined, or its new bindings; nothing if the session has closed."""
        with self._locked() as db:
            db.execute(
                "INSERT INTO actors (session_id, id, actor) SELECT %s, %s, %s WHERE EXISTS "
                "(SELECT 1 FROM sessions WHERE id = %s) ON CONFLICT (session_id, id) DO UPDATE SET actor = excluded.actor",
                (session_id, actor_id, actor, session_id),
            )

    def delete_actor(self, session_id: str, actor_id: str) -> None:
        with self._locked() as db:
            db.execute("DELETE FROM actors WHERE session_id = %s AND id = %s", (session_id, actor_id))

    def session(self, session_id: str) -> SessionRecord | None:
        with self._locked() as db:
            row = db.execute("SELECT id, name, token, created_us FROM sessions WHERE id = %s", (session_id,)).fetchone()
            if row is None:
                return None
            actors = db.execute("SELECT actor FROM actors WHERE session_id = %s ORDER BY seq", (session_id,)).fetchall()
        return SessionRecord(*row, actors=tuple(bytes(actor) for (actor,) in actors))


_JOB_FIELDS = frozenset(("state", "progress", "metrics", "error", "started_us", "ended_us", "server_id"))
_JOB_COLUMNS = (
    "id, kind, state, avatar_ids, options, progress, metrics, error, "
    "created_us, started_us, ended_us, result_version, seq"
)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _job_record(row: tuple) -> JobRecord:
    return job_record(row, load_json=_decoded)


def _version_record(row: tuple) -> ModelVersionRecord:
    return version_record(row, load_json=_decoded)


def _decoded(value: object) -> object:
    """psycopg decodes JSONB and arrays itself."""
    return value

