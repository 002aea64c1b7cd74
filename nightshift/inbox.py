"""The inbox: which dropped files are scripts, when they are complete, claiming them, and where they end up.

A file is taken only when it is complete: its size and mtime have held still for
`stable_s` and no process on this machine has it open for writing. It is claimed by an
atomic rename into inbox/.claimed/<stamp>/ (so two watchers, or a watcher and a user,
can never both take it), under a name that fits the filesystem with room for the
reports beside it (any name the filesystem allows arrives; undecodable bytes become
`_`). On success it moves to done/, on failure to failed/ beside `<name>.error.txt`.
Nothing is ever deleted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nightshift import faults
from nightshift.files import fit_name, readable_name, sha256_file

SCRIPT_SUFFIXES = {".fountain", ".spmd", ".txt", ".md", ".markdown", ".text"}
CLAIMED, DONE, FAILED = ".claimed", "done", "failed"
WAITING_NOTE = ".waiting.txt"  # beside a claim whose planning waits (a full disk, the server away): why, and until when
_EDITOR_LEFTOVERS = ("~", ".swp", ".swo", ".tmp", ".part", ".partial", ".crdownload")


@dataclass(frozen=True)
class Claim:
    original_name: str  # as dropped, readable (undecodable bytes shown as U+FFFD)
    path: Path  # inside inbox/.claimed/<stamp>/, under a name that fits
    sha256: str


def is_candidate(path: Path) -> tuple[bool, str]:
    """(take it?, why not). Hidden files, folders, symlinks, editor leftovers and non-script types are left alone."""
    name = path.name
    if name.startswith(".") or name.startswith("~$") or name.startswith("#"):
        return False, "hidden or lock file"
    if path.is_symlink():
        return False, "a symlink (only regular files are taken, so nothing outside the inbox is read)"
    if not path.is_file():
        return False, "not a regular file"
    if name.endswith(_EDITOR_LEFTOVERS):
        return False, "an editor or download leftover"
    if Path(readable_name(name)).suffix.lower() not in SCRIPT_SUFFIXES:
        return False, f"not a script type ({', '.join(sorted(SCRIPT_SUFFIXES))})"
    return True, ""


@dataclass
class StabilityTracker:
    """Remembers each file's (size, mtime) and since when it has held still."""

    stable_s: float
    seen: dict[Path, tuple[tuple[int, int], float]] = field(default_factory=dict)

    def ready(self, path: Path, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        try:
            stat = path.stat()
        except FileNotFoundError:
            self.seen.pop(path, None)
            return False
        signature = (stat.st_size, stat.st_mtime_ns)
        previous = self.seen.get(path)
        if previous is None or previous[0] != signature:
            self.seen[path] = (signature, now)
            return self.stable_s == 0 and stat.st_size > 0 and previous is not None
        return now - previous[1] >= self.stable_s

    def forget(self, path: Path) -> None:
        self.seen.pop(path, None)


def open_for_writing(path: Path) -> bool:
    """Does any process on this machine (that we may look at) hold `path` open for writing? Linux tells
    through /proc; elsewhere the answer is no and stability alone decides."""
    try:
        target = path.stat()
    except OSError:
        return False
    proc = Path("/proc")
    if not (proc / "self" / "fdinfo").is_dir():
        return False
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            descriptors = os.listdir(proc / pid / "fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                found = os.stat(proc / pid / "fd" / fd)
                if (found.st_dev, found.st_ino) != (target.st_dev, target.st_ino):
                    continue
                flags = int((proc / pid / "fdinfo" / fd).read_text().split("flags:")[1].split()[0], 8)
            except (OSError, IndexError, ValueError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                return True
    return False


def _unique(folder: Path, name: str) -> Path:
    target = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 2
    while target.exists():
        target = folder / f"{stem}-{n}{suffix}"
        n += 1
    return target


def claim(path: Path, inbox: Path) -> Claim | None:
    """Atomically move `path` into inbox/.claimed/<stamp>/<name>. None when someone else took it (or it vanished)
    first. The name is kept (a script without a title page is titled from it); the stamp folder keeps claims apart."""
    claimed_dir = inbox / CLAIMED
    claimed_dir.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S.%f")
    holder = _unique(claimed_dir, stamp)
    holder.mkdir()
    target = holder / fit_name(path.name)
    faults.reached("claim")
    try:
        os.rename(path, target)  # atomic on one file system; fails if the file is gone
    except FileNotFoundError:
        holder.rmdir()
        return None
    return Claim(readable_name(path.name), target, sha256_file(target))


def original_name(claimed: Path) -> str:
    return readable_name(claimed.name)


def settle(claimed: Path, inbox: Path, ok: bool, report: str | None = None) -> Path:
    """Move a claimed script to done/ or failed/ (with `<name>.error.txt`). Returns its new path."""
    folder = inbox / (DONE if ok else FAILED)
    folder.mkdir(exist_ok=True)
    target = _unique(folder, fit_name(claimed.name))
    if report is not None:
        (folder / f"{target.name}.error.txt").write_text(report, encoding="utf-8", errors="replace")
    os.rename(claimed, target)
    holder = claimed.parent
    if holder.parent.name == CLAIMED:
        (holder / WAITING_NOTE).unlink(missing_ok=True)
        if not any(holder.iterdir()):
            holder.rmdir()
    return target


def leftover_claims(inbox: Path) -> list[Path]:
    """Claims a crashed run left behind, oldest first: they are taken up again on restart."""
    folder = inbox / CLAIMED
    if not folder.is_dir():
        return []
    claims = []
    for holder in sorted(folder.iterdir()):
        if not holder.is_dir() or holder.name.startswith("."):
            continue  # .incoming-*: a copy `nightshift run` had not finished; it was never claimed
        files = [p for p in holder.iterdir() if p.is_file() and not p.name.startswith(".")]
        if not files:
            for leftover in holder.iterdir():
                leftover.unlink()
            holder.rmdir()  # killed between making the holder and the rename: nothing was claimed
        claims += files
    return sorted(claims)


def pending_files(inbox: Path) -> list[Path]:
    """Files directly in the inbox, oldest first (arrival order)."""
    if not inbox.is_dir():
        return []
    entries = []
    for entry in inbox.iterdir():
        try:
            entries.append((entry.lstat().st_mtime_ns, entry.name, entry))
        except FileNotFoundError:
            continue
    return [e for _, _, e in sorted(entries)]


def note_waiting(claimed: Path, text: str) -> None:
    """Say beside a claim why it waits, so nothing sits in .claimed/ without a report."""
    try:
        (claimed.parent / WAITING_NOTE).write_text(text, encoding="utf-8", errors="replace")
    except OSError:
        pass  # the disk is full: the log says it too
