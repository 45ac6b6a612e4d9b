"""Writing files whole or not at all.

A model file cut short by a full disk or a killed process must never be what a later load
finds: each file is written to a temporary name beside it, flushed to disk, then renamed over
the final name (a rename within a directory is atomic), and a failed write removes its
temporary file. The error a full disk raises is the OSError (ENOSPC) itself, naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, OSError) and error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    sync_directory(path.parent)


def sync_directory(path: Path) -> None:
    """Make a rename in `path` durable (a power cut after it keeps the new name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_full(error: BaseException) -> OSError | None:
    """The OSError saying the disk (or quota) is full somewhere in `error`'s chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL:
            return current
        current = current.__cause__ or current.__context__
    return None
