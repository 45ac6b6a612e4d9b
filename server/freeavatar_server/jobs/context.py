"""What a running job sees: its record, the store, progress reporting and cancellation."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

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

    def model_dir(self, avatar_id: str, kind: str) -> Path:
        """A fresh directory for this job's model files of one avatar."""
        path = self.data_dir / "models" / avatar_id / kind / self.job.id
        path.mkdir(parents=True, exist_ok=True)
        return path
