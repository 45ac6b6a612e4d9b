"""A throwaway NATS server and PostgreSQL cluster on loopback ports, as this process's own
children: for the cluster tests and `freeavatar bench cluster`, never for production.

Both are the Debian packages' binaries (`apt-get install nats-server postgresql`). PostgreSQL
refuses to run as root, so as root the database runs as the `postgres` user the package makes
(through `runuser`); its directory is made theirs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # newest first


class ServiceUnavailable(RuntimeError):
    """The binary is not installed, or it would not start; the message says which and why."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailable(f"{what} exited with code {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise ServiceUnavailable(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def postgres_binary(name: str) -> Path | None:
    for directory in POSTGRES_BIN_DIRS:
        if (directory / name).exists():
            return directory / name
    found = shutil.which(name)
    return Path(found) if found else None


def missing_services() -> list[str]:
    """What is not installed of what the cluster needs (empty: both are)."""
    missing = [] if shutil.which("nats-server") else ["nats-server"]
    if postgres_binary("initdb") is None or postgres_binary("postgres") is None:
        missing.append("postgresql")
    return missing


@dataclass
class LocalNats:
    """`nats-server` on a free loopback port until `stop`."""

    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> LocalNats:
        binary = shutil.which("nats-server")
        if binary is None:
            raise ServiceUnavailable("nats-server is not installed (apt-get install nats-server)")
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, self.process, "nats-server")
        return self

    def stop(self) -> None:
        _end(self.process)
        self.process = None


@dataclass
class LocalPostgres:
    """A fresh PostgreSQL cluster (initdb) in a temporary directory on a free loopback port,
    trusting loopback connections as the user `freeavatar`, until `stop`."""

    port: int = 0
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="freeavatar-pg-")))
    process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://freeavatar@127.0.0.1:{self.port}/{database}"

    def start(self) -> LocalPostgres:
        initdb, postgres = postgres_binary("initdb"), postgres_binary("postgres")
        if initdb is None or postgres is None:
            raise ServiceUnavailable("PostgreSQL is not installed (apt-get install postgresql)")
        as_user = self._as_user()
        data = self.directory / "data"
        if not data.exists():  # else: started again after `stop(remove=False)`
            done = subprocess.run(
                [*as_user, str(initdb), "-D", str(data), "-A", "trust", "-U", "freeavatar", "--no-sync", "-E", "UTF8"],
                capture_output=True,
            )  # fmt: skip
            if done.returncode != 0:
                raise ServiceUnavailable(f"initdb failed: {done.stderr.decode(errors='replace').strip()[-400:]}")
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [
                *as_user, str(postgres), "-D", str(data), "-p", str(self.port), "-k", str(self.directory),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, self.process, "postgres")
        return self

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg  # lazy: only the cluster's tools need it

        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(self.url(), autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
                return self.url(name)
            except psycopg.OperationalError:  # still starting up ("the database system is starting up")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, remove: bool = True) -> None:
        """Stop the server; `remove=False` keeps its data for `start` to run it again."""
        pg_ctl = postgres_binary("pg_ctl")
        if self.process is not None and self.process.poll() is None and pg_ctl is not None:
            # a fast shutdown ends the clients' connections (a plain SIGTERM, a "smart" one, would
            # wait for every client to hang up); data about to be removed needs no checkpoint
            mode = "immediate" if remove else "fast"
            subprocess.run(
                [*self._as_user(), str(pg_ctl), "stop", "-D", str(self.directory / "data"), "-m", mode, "-w"],
                capture_output=True, timeout=30,
            )  # fmt: skip
        _end(self.process)
        self.process = None
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _as_user(self) -> list[str]:
        """PostgreSQL will not run as root: as root, run it as the package's `postgres` user."""
        if os.geteuid() != 0:
            return []
        runuser = shutil.which("runuser")
        if runuser is None:
            raise ServiceUnavailable("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(self.directory, "postgres")
        self.directory.chmod(0o700)
        return [runuser, "-u", "postgres", "--"]


def _end(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
