"""A content-addressed cache of planner exchanges, so a re-run makes no model calls.

Each entry is one JSON file named by the sha256 of everything that shaped the
answer (scene text, model and digest, templates, options). Entries keep the
exact messages sent and the answer received: they are also the planning record.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from nightshift.files import write_atomic


def cache_key(material: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class PlannerCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # A damaged entry (a crash mid-write on an old version, a disk error) is a miss, not a failure.
            return None

    def put(self, key: str, record: dict[str, Any]) -> Path:
        # Written then renamed: a reader never sees half an entry.
        return write_atomic(self._path(key), json.dumps(record, ensure_ascii=False, indent=1))
