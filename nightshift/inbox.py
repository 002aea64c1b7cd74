"""The inbox: which dropped files are scripts, when they are complete, claiming them, and where they end up.

A file is taken only after its size and mtime have held still for `stable_s`;
it is claimed by an atomic rename into inbox/.claimed/ (so two watchers, or a
watcher and a user, can never both take it); on success it moves to done/, on
failure to failed/ beside `<name>.error.txt`. Nothing is ever deleted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nightshift import faults
from nightshift.shot_render import sha256_file

SCRIPT_SUFFIXES = {".fountain", ".spmd", ".txt", ".md", ".markdown", ".text"}
CLAIMED, DONE, FAILED = ".claimed", "done", "failed"
_EDITOR_LEFTOVERS = ("~", ".swp", ".swo", ".tmp", ".part", ".partial", ".crdownload")


@dataclass(frozen=True)
class Claim:
    original_name: str
    path: Path  # inside inbox/.claimed/
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
    if path.suffix.lower() not in SCRIPT_SUFFIXES:
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
    target = holder / path.name
    faults.reached("claim")
    try:
        os.rename(path, target)  # atomic on one file system; fails if the file is gone
    except FileNotFoundError:
        holder.rmdir()
        return None
    return Claim(path.name, target, sha256_file(target))


def original_name(claimed: Path) -> str:
    return claimed.name


def settle(claimed: Path, inbox: Path, ok: bool, report: str | None = None) -> Path:
    """Move a claimed script to done/ or failed/ (with `<name>.error.txt`). Returns its new path."""
    folder = inbox / (DONE if ok else FAILED)
    folder.mkdir(exist_ok=True)
    target = _unique(folder, claimed.name)
    if report is not None:
        (folder / f"{target.name}.error.txt").write_text(report, encoding="utf-8")
    os.rename(claimed, target)
    holder = claimed.parent
    if holder.parent.name == CLAIMED and not any(holder.iterdir()):
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
        files = [p for p in holder.iterdir() if p.is_file()]
        if not files:
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
