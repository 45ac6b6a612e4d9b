"""A real full disk, or a read-only file system, for one server process: the process runs in a
mount namespace of its own (`unshare`), where a small tmpfs or a read-only bind mount can be
made without touching the machine's mounts. Tests that need it skip where unshare is refused."""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
from pathlib import Path

from freeavatar_server.tools.bench import free_port


def unshare_prefix() -> list[str]:
    # root needs only a mount namespace; anyone else maps to root in a user namespace first
    return ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]


@functools.cache
def mount_namespaces_work() -> bool:
    try:
        probe = subprocess.run(
            [*unshare_prefix(), "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def tmpfs(path: Path, size: str) -> str:
    """Shell commands mounting a tmpfs of `size` (e.g. "2m") at `path`."""
    return f"mkdir -p {shlex.quote(str(path))} && mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(path))}"


def read_only(path: Path) -> str:
    """Shell commands making `path` (a directory) read-only, even for root."""
    quoted = shlex.quote(str(path))
    return f"mount --bind {quoted} {quoted} && mount -o remount,bind,ro {quoted}"


class NamespacedServer:
    """`freeavatar serve` after `setup` (shell commands) in a mount namespace of its own."""

    def __init__(self, setup: str, data_dir: Path, *serve_args: str) -> None:
        self.port = free_port()
        serve = [sys.executable, "-m", "freeavatar", "serve", "--data-dir", str(data_dir), "--port", str(self.port),
                 "--log-level", "WARNING", *serve_args]  # fmt: skip
        script = f"{setup} && exec {shlex.join(serve)}"
        env = os.environ | {"COLUMNS": "250", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [*unshare_prefix(), "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
        )
        self.address = f"127.0.0.1:{self.port}"

    def path(self, path: Path) -> Path:
        """`path` as the server sees it (in its own mounts), through /proc."""
        return Path(f"/proc/{self.process.pid}/root") / path.relative_to("/")

    def stop(self) -> str:
        """Stop it; returns what it printed."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            output, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        return output
