"""Files, the ground floor: one atomic writer, hashes, timestamps, names that fit, paths that stay inside.

Everything above writes through `atomic_output` (a crash never leaves half a file under
the real name), hashes with `sha256_file`, stamps with `now_utc`, checks a path read from
disk with `inside`, and makes file names from untrusted text with `fit_name`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from nightshift.errors import NightshiftError

PARTIAL_MARK = ".partial"  # every temporary name has it: `.<stem>.partial-<id><suffix>`, never delivered
NAME_MAX_BYTES = 255  # the filesystem limit on one name (ext4, xfs, btrfs, tmpfs, NFS)
SAFE_NAME_BYTES = 180  # room left for the suffixes Nightshift adds: "-12", ".error.txt", ".duplicate.txt"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final` (same suffix, so encoders pick the format); rename it onto
    `final` only if the block succeeds. A killed process leaves only a hidden `.partial` file behind."""
    final.parent.mkdir(parents=True, exist_ok=True)
    stem = fit_name(final.stem, SAFE_NAME_BYTES - 40)
    tmp = final.with_name(f".{stem}{PARTIAL_MARK}-{uuid.uuid4().hex[:8]}{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> Path:
    """Write text beside the target and rename: readers see the old file or the new one, never half."""
    with atomic_output(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the user's umask applies
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
    return path


def is_partial(path: Path) -> bool:
    return path.name.startswith(".") and PARTIAL_MARK in path.name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def readable_name(name: str) -> str:
    """A name as text a person (and a JSON file) can hold: undecodable bytes become U+FFFD."""
    return os.fsencode(name).decode("utf-8", errors="replace")


def fit_name(name: str, max_bytes: int = SAFE_NAME_BYTES) -> str:
    """`name` as valid UTF-8 within `max_bytes`, keeping its suffix (`.fountain`), so every name
    Nightshift derives from it (reports, notes, numbered copies) fits the filesystem's limit."""
    name = readable_name(name).replace("\ufffd", "_").replace("/", "_").replace("\0", "_")
    if len(name.encode()) <= max_bytes:
        return name
    stem, suffix = (name.rsplit(".", 1)[0], "." + name.rsplit(".", 1)[1]) if "." in name[1:] else (name, "")
    if len(suffix.encode()) > 16:
        stem, suffix = name, ""
    tag = "-" + hashlib.sha256(name.encode()).hexdigest()[:8]  # two long names that share a start stay apart
    budget = max_bytes - len(suffix.encode()) - len(tag)
    return stem.encode()[:budget].decode("utf-8", errors="ignore") + tag + suffix


class OutsideStudio(NightshiftError):
    """A path read from a record points outside the folders it must stay in: the record was tampered with."""


def inside(path: Path | str, *roots: Path, what: str = "path") -> Path:
    """`path` resolved, if it lies inside one of `roots` (also resolved); else OutsideStudio naming it."""
    resolved = Path(path).expanduser().resolve()
    for root in roots:
        if resolved.is_relative_to(root.expanduser().resolve()):
            return resolved
    where = " or ".join(str(r) for r in roots)
    raise OutsideStudio(f"{what} {str(path)!r} is outside {where}",
                        "the record was edited by hand or tampered with; it is not acted on. Remove it, "
                        "or drop the script into the inbox again")


def exchange(a: Path, b: Path) -> None:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE): a reader of either finds the old or the new,
    never nothing. Where the call is missing, two renames through a hidden name (a moment with `b` absent)."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None and renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return
    aside = b.with_name(f".{b.name}.aside-{uuid.uuid4().hex[:8]}")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)
