"""One render per GPU per machine, held by the kernel: a lock file that dies with its process.

Prefect's global concurrency limit shows the GPU slot in the UI and spans flows, but a slot
held by a process that is killed outright stays taken until the server forgets it (with its
default in-memory lease store, never: the next night would wait forever). So each render
first takes this machine-local lock; holding it proves no live Nightshift render on this
machine holds the GPU, and any slot Prefect still counts is a leftover to give back.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path(name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"{name}-uid{os.getuid()}.lock"


@contextmanager
def machine_lock(name: str) -> Iterator[Path]:
    """Block until this machine's lock `name` is free, hold it for the block. Released on exit or death."""
    path = lock_path(name)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(descriptor)  # closing releases the lock; so does the process dying


def is_locked(name: str) -> bool:
    path = lock_path(name)
    if not path.exists():
        return False
    descriptor = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False
