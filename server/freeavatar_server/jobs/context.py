"""What a running job sees: its record, the store, progress reporting and cancellation."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from freeavatar_server.files import sync_directory
from freeavatar_server.store import JobRecord, Store


class JobCancelled(Exception):
    """Raised inside a job when the server asked it to stop."""


@dataclass(frozen=True)
class JobResult:
    """A model a job produced for one avatar; the server publishes it as a new version."""

    avatar_id: str
    model_kind: int  # freeavatar.v1.ModelKind
    model_dir: Path
    metrics: dict[str, float]


@dataclass
class JobContext:
    job: JobRecord
    store: Store
    data_dir: Path
    events: TextIO = field(default_factory=lambda: sys.stdout)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def report(self, progress: float, metrics: dict[str, float] | None = None, message: str = "") -> None:
        """Tell the server how far the job is (0..1), with its latest metrics and a log line."""
        event = {"progress": min(max(progress, 0.0), 1.0), "metrics": metrics or {}, "message": message}
        self.emit(event)

    def emit(self, event: dict[str, object]) -> None:
        self.events.write(json.dumps(event) + "\n")
        self.events.flush()

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()

    staged: dict[Path, Path] = field(default_factory=dict)  # model dir as written -> as published

    def model_dir(self, avatar_id: str, kind: str) -> Path:
        """A fresh directory for this job's model files of one avatar.

        The job writes into it under a temporary name; `publish_model_dirs` renames it to its
        final name only once the job has succeeded, so a published model never holds a file cut
        short (a full disk, a killed job) and a failed job leaves no model behind."""
        final = self.data_dir / "models" / avatar_id / kind / self.job.id
        staging = final.with_name(f"{final.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)  # from an earlier, interrupted attempt
        staging.mkdir(parents=True)
        self.staged[staging] = final
        return staging

    def publish_model_dirs(self) -> dict[Path, Path]:
        """Move every finished model directory to its final name; returns written -> final."""
        for staging, final in self.staged.items():
            for path in staging.rglob("*"):
                if path.is_file():  # on disk before the rename makes them visible
                    with path.open("rb+") as file:
                        os.fsync(file.fileno())
            os.replace(staging, final)  # atomic: the final name has all of it or does not exist
            sync_directory(final.parent)
        return dict(self.staged)

    def discard_model_dirs(self) -> None:
        """Remove what a failed or cancelled job wrote."""
        for staging in self.staged:
            shutil.rmtree(staging, ignore_errors=True)
