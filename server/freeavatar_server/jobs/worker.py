"""The job process: `python -m freeavatar_server.jobs.worker --data-dir D --job-id J`.

Protocol with the server (jobs/manager.py): JSON lines on stdout ({"progress", "metrics",
"message"} while running, then {"result": ...}, {"cancelled": true} or {"error": ...}); the
server writes "cancel" to stdin to stop it, and stdin closing (the server died) stops it too.
Tracebacks go to stderr, which the server keeps in the job's log file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from freeavatar._proto import job_pb2
from freeavatar_server.app.config import ServerConfig
from freeavatar_server.files import disk_full
from freeavatar_server.jobs.context import JobCancelled, JobContext, JobResult
from freeavatar_server.store import SqliteStore, Store, StoreFull

# Job kind -> "module:function" taking a JobContext and returning JobResults; imported lazily
# because each pulls in its own training stack.
RUNNERS: dict[int, str] = {
    job_pb2.JOB_KIND_RENDERER_TRAINING: "freeavatar_server.training.renderer.job:train_renderer_job",
    job_pb2.JOB_KIND_ANIMATOR_FINETUNE: "freeavatar_server.training.animator.job:finetune_animator_job",
}


def runner_for(kind: int) -> Callable[[JobContext], list[JobResult]]:
    if kind not in RUNNERS:
        raise ValueError(f"this server cannot run {job_pb2.JobKind.Name(kind)} jobs yet")
    module, function = RUNNERS[kind].split(":")
    return getattr(importlib.import_module(module), function)


def watch_stdin(stdin: TextIO, cancelled: threading.Event) -> None:
    for line in stdin:
        if line.strip() == "cancel":
            break
    cancelled.set()  # "cancel", or EOF: the server is gone


def failure_message(error: Exception, data_dir: Path) -> str:
    """What the job's record says went wrong; a full disk says so, where, and what to do."""
    full = disk_full(error)
    if full is not None or isinstance(error, StoreFull):
        # the nearest directory of the file that still exists (the job's own was removed): the
        # models may be on another disk than the data dir
        holder = Path(full.filename).parent if full is not None and full.filename else data_dir
        while not holder.exists() and holder != holder.parent:
            holder = holder.parent
        where = f" writing {Path(full.filename).name}" if full is not None and full.filename else ""
        return (
            f"the disk holding {holder} is full ({full.strerror if full else 'SQLite: database or disk is full'}"
            f"{where}): no model was published and the job's files were removed; free space there "
            "and run the job again"
        )
    return f"{type(error).__name__}: {error}"


# A cluster's server gives its job processes the store's URL here, not on their command line
# (which every user of the machine can read); libpq takes the password from its own variables.
STORE_URL_VARIABLE = "FREEAVATAR_STORE"


def open_store(data_dir: Path) -> Store:
    url = os.environ.get(STORE_URL_VARIABLE)
    if url:
        # lazy: psycopg, of the [cluster] extra
        from freeavatar_server.store_postgres import PostgresStore

        return PostgresStore(url)
    return SqliteStore(ServerConfig(data_dir=data_dir).store_path, check_integrity=False)  # the server did


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one FreeAvatar training job.")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    args = parser.parse_args(argv)

    store = open_store(args.data_dir)
    context = JobContext(job=store.get_job(args.job_id), store=store, data_dir=args.data_dir)
    threading.Thread(target=watch_stdin, args=(sys.stdin, context.cancelled), daemon=True).start()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        results = runner_for(context.job.kind)(context)
        published = context.publish_model_dirs()
        results = [replace(r, model_dir=published.get(r.model_dir, r.model_dir)) for r in results]
    except JobCancelled:
        context.discard_model_dirs()
        context.emit({"cancelled": True})
        return 0
    except Exception as error:
        traceback.print_exc()
        context.discard_model_dirs()
        context.emit({"error": failure_message(error, args.data_dir)})
        return 1
    finally:
        store.close()
    context.emit(
        {
            "result": [
                {
                    "avatar_id": r.avatar_id,
                    "model_kind": r.model_kind,
                    "model_dir": str(r.model_dir.relative_to(args.data_dir)),
                    "metrics": r.metrics,
                }
                for r in results
            ]
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
