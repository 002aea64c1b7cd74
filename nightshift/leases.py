"""Leases: who owns a claim, a job or a GPU, across processes and machines sharing one studio folder.

A lease is two things in `<studio>/.nightshift/leases/`:
- `<key>.lock`, held with flock: the kernel releases it when the owner dies, so on one machine (and
  on shared storage whose locks are shared, such as NFSv4) a lease never outlives its owner;
- `<key>.json`, the lease record: host, pid, boot id, since, and an expiry the owner renews while it
  works. It covers storage whose locks do not reach other machines.

A lease is taken only when the lock is free and the record is absent, our own, or its owner is
provably gone: on this host, its pid is dead or the host has rebooted; on another host, it stopped
renewing and the expiry has passed. Only the owner (or a taker that proved the owner gone) gives
it back.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nightshift.errors import NightshiftError
from nightshift.files import write_atomic
from nightshift.machine import machine_name

LEASE_TTL_S = 60.0  # a machine that stops renewing for this long is taken to be gone (night.lease_ttl_s)
RENEW_EVERY_S = 10.0
HOLD_POLL_S = 0.05


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


HOST, BOOT = machine_name(), boot_id()


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    boot: str
    since: float
    expires: float
    what: str = ""

    def describe(self) -> str:
        return f"{self.what or 'a process'} (pid {self.pid} on {self.host})"

    def gone(self, now: float) -> bool:
        if self.host == HOST and (self.boot == BOOT or not self.boot):
            return not _pid_alive(self.pid)
        if self.host == HOST:
            return True  # this host has rebooted since
        return now > self.expires


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def lease_key(kind: str, name: str) -> str:
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:120]


class Lease:
    """A held lease; renew() pushes its expiry out, release() gives it back. Use `LeaseBook.take`."""

    def __init__(self, book: LeaseBook, key: str, descriptor: int, owner: Owner) -> None:
        self.book, self.key, self.descriptor, self.owner = book, key, descriptor, owner
        self.released, self.depth, self.thread = False, 1, threading.get_ident()
        self.taken_over: Owner | None = None  # the gone owner this lease was taken from, if any

    def renew(self) -> None:
        if not self.released:
            now = time.time()
            self.owner = Owner(HOST, os.getpid(), BOOT, self.owner.since, now + self.book.ttl_s, self.owner.what)
            self.book._write(self.key, self.owner)

    def release(self) -> None:
        if self.released:
            return
        self.depth -= 1
        if self.depth > 0:
            return
        self.released = True
        self.book.record_path(self.key).unlink(missing_ok=True)
        os.close(self.descriptor)  # closing releases the flock

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LeaseBook:
    """The leases of one studio. `take` never blocks: it returns a Lease or the live owner.

    One book per studio folder per process (`LeaseBook.of`): flock conflicts even between two
    descriptors of one process, so every engine in a process must share the book to nest."""

    _books: dict[Path, LeaseBook] = {}

    @classmethod
    def of(cls, folder: Path, ttl_s: float = LEASE_TTL_S) -> LeaseBook:
        folder = folder.resolve()
        if folder not in cls._books:
            cls._books[folder] = cls(folder, ttl_s)
        cls._books[folder].ttl_s = ttl_s
        return cls._books[folder]

    def __init__(self, folder: Path, ttl_s: float = LEASE_TTL_S) -> None:
        self.folder, self.ttl_s = folder, ttl_s
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def lock_path(self, key: str) -> Path:
        return self.folder / f"{key}.lock"

    def record_path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def owner(self, key: str) -> Owner | None:
        try:
            data = json.loads(self.record_path(key).read_text(encoding="utf-8"))
            return Owner(str(data["host"]), int(data["pid"]), str(data.get("boot", "")), float(data["since"]),
                         float(data["expires"]), str(data.get("what", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def busy(self, key: str) -> Owner | None:
        """Who holds `key` now, if anyone but this thread. A peek: nothing is taken and nothing written."""
        with self._lock:
            held = self._held.get(key)
            if held is not None and not held.released:
                return None if held.thread == threading.get_ident() else held.owner
        try:
            descriptor = os.open(self.lock_path(key), os.O_RDWR)
        except FileNotFoundError:
            return None  # never taken
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.owner(key) or Owner("?", 0, "", 0, 0, "another process on this machine")
        finally:
            os.close(descriptor)  # releases the flock if this peek got it
        current = self.owner(key)
        return current if current is not None and not current.gone(time.time()) else None

    def _write(self, key: str, owner: Owner) -> None:
        write_atomic(self.record_path(key), json.dumps(owner.__dict__))

    def take(self, key: str, what: str = "") -> Lease | Owner:
        """The lease, or the Owner who holds it now (alive, or not yet provably gone). Re-entrant within a
        thread: a step that runs inside a Prefect flow takes the lease its caller already holds; another
        thread of this process is another owner."""
        with self._lock:
            held = self._held.get(key)
            if held is not None and not held.released:
                if held.thread != threading.get_ident():
                    return Owner(HOST, os.getpid(), BOOT, held.owner.since, held.owner.expires,
                                 f"another thread of this process ({held.owner.what or key})")
                held.depth += 1
                return held
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.lock_path(key), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return self.owner(key) or Owner("?", 0, "", 0, 0, "another process on this machine")
        current = self.owner(key)
        now = time.time()
        mine = current is not None and current.host == HOST and current.pid == os.getpid()
        if current is not None and not mine and not current.gone(now):
            os.close(descriptor)
            return current  # held from a machine whose locks do not reach us, and still renewing
        owner = Owner(HOST, os.getpid(), BOOT, now, now + self.ttl_s, what)
        self._write(key, owner)
        lease = Lease(self, key, descriptor, owner)
        if current is not None and not mine:
            lease.taken_over = current
        with self._lock:
            self._held[key] = lease
            self._start_renewing()
        return lease

    @contextmanager
    def hold(self, key: str, what: str = "", timeout_s: float | None = None) -> Iterator[Lease]:
        """Wait for `key`, then hold it for the block: a short section (a record's read-modify-write) that
        machines sharing the studio take in turn. A holder gone on another machine is waited out (its expiry)."""
        patience = timeout_s if timeout_s is not None else 2 * self.ttl_s
        deadline = time.monotonic() + patience
        while isinstance(lease := self.take(key, what), Owner):
            if time.monotonic() > deadline:
                raise NightshiftError(f"{key}: held by {lease.describe()} for longer than {patience:g} s",
                                      f"if that process is gone, remove {self.record_path(key)}")
            time.sleep(HOLD_POLL_S)
        with lease:
            yield lease

    def _start_renewing(self) -> None:
        """One renewal thread while any lease is held (called under self._lock); it ends when none is left, so a
        process that has touched many studios does not keep a thread for each."""
        if self._renewer is not None:
            return

        def renew_all() -> None:
            while True:
                time.sleep(min(RENEW_EVERY_S, self.ttl_s / 3))
                with self._lock:
                    held = [lease for lease in self._held.values() if not lease.released]
                    self._held = {lease.key: lease for lease in held}
                    if not held:
                        self._renewer = None
                        return
                for lease in held:
                    try:
                        lease.renew()
                    except OSError:
                        pass  # a full disk: the flock still holds here; the next renewal tries again

        self._renewer = threading.Thread(target=renew_all, name="nightshift-lease-renewal", daemon=True)
        self._renewer.start()
