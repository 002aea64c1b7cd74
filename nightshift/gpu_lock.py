"""One render per physical GPU, held by the kernel: a lock file that dies with its process.

The lock lives in a folder every process on the machine sees whatever its temporary folder
(/run/lock, else /var/tmp), named after the host and the device, so two processes with
different TMPDIRs still share one GPU's lock. Holding it proves no live Nightshift render on
this machine uses that GPU: the Prefect slot shown in the UI may then be repaired safely.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nightshift.machine import machine_name

LOCK_FOLDERS = (Path("/run/lock"), Path("/var/tmp"), Path("/tmp"))


def gpu_name(device: str) -> str:
    """The machine-wide name of one GPU: host and device (cuda:0, cpu)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"nightshift-gpu-{machine_name()}-{device}".lower())


def lock_path(name: str) -> Path:
    folder = next((f for f in LOCK_FOLDERS if f.is_dir() and os.access(f, os.W_OK)), LOCK_FOLDERS[-1])
    return folder / f"{name}.lock"


@contextmanager
def machine_lock(name: str, stop: threading.Event | None = None, poll_s: float = 0.2) -> Iterator[Path]:
    """Wait until this machine's lock `name` is free (or `stop` is set: InterruptedError), hold it for the block.
    Released on exit or when the process dies."""
    path = lock_path(name)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop is not None and stop.wait(poll_s):
                    raise InterruptedError(f"stopped while waiting for {name}") from None
                if stop is None:
                    fcntl.flock(descriptor, fcntl.LOCK_EX)
                    break
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
