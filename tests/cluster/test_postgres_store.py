"""The PostgreSQL store keeps the same records as the SQLite one, and what a cluster adds:
claims that give each job to one server, and the reaping of jobs whose server died."""

from __future__ import annotations

import numpy as np
import pytest

from freeavatar._proto import avatar_pb2, job_pb2
from freeavatar.rig import RigSpec
from freeavatar_server.store import AvatarNameTaken, AvatarNotFound, JobNotFound, StoreUnusable
from freeavatar_server.store_postgres import MIGRATIONS, PostgresStore
from freeavatar_server.tools.cluster_services import free_port


def spec(name: str = "head") -> RigSpec:
    return RigSpec.arkit52(name)


def test_records_round_trip(store_url: str) -> None:
    store = PostgresStore(store_url)
    avatar = store.add_avatar(spec())
    assert store.get_avatar(avatar.id).spec == spec()
    with pytest.raises(AvatarNameTaken):
        store.add_avatar(spec())
    rig = np.linspace(0, 1, 52, dtype=np.float32)
    assert store.add_render_samples(avatar.id, [(rig, b"png")] * 3) == 3
    rigs, images = store.render_samples(avatar.id)
    assert rigs.shape == (3, 52) and images == [b"png"] * 3
    with pytest.raises(AvatarNotFound):
        store.add_keyframes("nobody", [(rig, b"png")])
    job = store.add_job(job_pb2.JOB_KIND_RENDERER_TRAINING, [avatar.id], job_pb2.TrainingOptions(steps=5))
    assert [j.id for j in store.list_jobs(0, 10, avatar_id=avatar.id)] == [job.id]
    assert store.list_jobs(0, 10, avatar_id="other") == []
    store.update_job(job.id, state=job_pb2.JOB_STATE_RUNNING, metrics={"loss": 0.5})
    version = store.publish_model(job.id, avatar.id, avatar_pb2.MODEL_KIND_RENDERER, {"psnr": 30.0}, "models/x")
    assert version.version == 1 and version.active
    assert store.get_job(job.id).state == job_pb2.JOB_STATE_SUCCEEDED
    assert store.avatar_summary(avatar.id).renderer == version
    with pytest.raises(JobNotFound):
        store.get_job("missing")
    store.close()
    again = PostgresStore(store_url)  # migrations already applied: a second server just opens it
    assert [a.id for a in again.list_avatars(0, 10)] == [avatar.id]
    again.close()


def test_each_job_is_claimed_once_and_a_dead_servers_job_fails(store_url: str) -> None:
    a, b = PostgresStore(store_url), PostgresStore(store_url)
    jobs = [a.add_job(job_pb2.JOB_KIND_RENDERER_TRAINING, [], job_pb2.TrainingOptions()).id for _ in range(3)]
    a.heartbeat("server-a")
    b.heartbeat("server-b")
    claimed = [a.claim_job("server-a"), b.claim_job("server-b"), a.claim_job("server-a")]
    assert sorted(claimed) == sorted(jobs) and a.claim_job("server-a") is None
    a.update_job(claimed[0], state=job_pb2.JOB_STATE_RUNNING)
    # server-b beats on; server-a stops: after the grace its running job fails, its claimed one
    # goes back to the queue
    b.heartbeat("server-b")
    with b._locked() as db:  # age server-a's heartbeat as if it had died 10 s ago
        db.execute("UPDATE servers SET heartbeat_at = now() - interval '10 seconds' WHERE id = 'server-a'")
    failed = b.reap_jobs(stale_after_s=5.0, reason="server {server} stopped")
    assert failed == [claimed[0]]
    record = b.get_job(claimed[0])
    assert record.state == job_pb2.JOB_STATE_FAILED and record.error == "server server-a stopped"
    assert b.claim_job("server-b") == claimed[2]  # re-queued, claimed again
    a.close()
    b.close()


def test_too_new_schema_and_unreachable_server_are_named(store_url: str) -> None:
    store = PostgresStore(store_url)
    with store._locked() as db:
        db.execute("UPDATE freeavatar_schema SET version = %s", (len(MIGRATIONS) + 1,))
    store.close()
    with pytest.raises(StoreUnusable, match="newer than this server"):
        PostgresStore(store_url)
    port = free_port()
    with pytest.raises(StoreUnusable, match=rf"127.0.0.1:{port}/x cannot be reached"):
        PostgresStore(f"postgresql://freeavatar@127.0.0.1:{port}/x")


def test_a_broken_connection_is_named_then_reopened(store_url: str) -> None:
    store, other = PostgresStore(store_url), PostgresStore(store_url)
    with store._locked() as db:
        (pid,) = db.execute("SELECT pg_backend_pid()").fetchone()
    with other._locked() as db:  # end the store's connection, as a PostgreSQL restart would
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreUnusable, match="cannot be reached"):
        store.ping()
    store.ping()  # the next call connects again
    store.close()
    other.close()
