"""Delivery: the dated folder a user opens in the morning, and the run's record of what was made.

output/YYYY-MM-DD/<script-slug>/ (the date the night's run started; a second
delivery of the same script that day gets -2, -3 ...). The job's work folder is
moved there only once the cut and the manifest are written, so a delivery
folder that exists is a finished one.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field

from nightshift import __version__
from nightshift.plan_files import write_atomic
from nightshift.shot_render import ClipRecord, now_utc, sha256_file

MANIFEST_JSON = "manifest.json"
RUN_MANIFEST_VERSION = "1"


class DeliveredFile(BaseModel):
    path: str
    sha256: str
    bytes: int


class RunManifest(BaseModel):
    manifest_version: str = RUN_MANIFEST_VERSION
    nightshift_version: str = __version__
    title: str
    script_name: str
    script_sha256: str
    job_id: str
    renderer: str
    night_started: str | None
    delivered: str
    python: str = Field(default_factory=lambda: sys.version.split()[0])
    machine: str = Field(default_factory=lambda: f"{platform.system()} {platform.machine()} {platform.node()}")
    clips: list[ClipRecord]
    files: list[DeliveredFile]
    history: list[str] = Field(default_factory=list)


def delivery_folder(output_root: Path, night: datetime, slug: str) -> Path:
    day = output_root / night.strftime("%Y-%m-%d")
    target, n = day / slug, 2
    while target.exists():
        target = day / f"{slug}-{n}"
        n += 1
    return target


def list_files(folder: Path) -> list[DeliveredFile]:
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST_JSON or relative.startswith(".") or "/." in relative:
            continue
        files.append(DeliveredFile(path=relative, sha256=sha256_file(path), bytes=path.stat().st_size))
    return files


def write_run_manifest(folder: Path, **fields: object) -> RunManifest:
    manifest = RunManifest(delivered=now_utc(), files=list_files(folder), **fields)  # type: ignore[arg-type]
    write_atomic(folder / MANIFEST_JSON, manifest.model_dump_json(indent=2))
    return manifest


def move_into_place(work: Path, target: Path) -> Path:
    """Rename the finished work folder onto its delivery path (copy, then rename, across file systems)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    leftover = work / ".work"
    if leftover.is_dir() and not any(leftover.iterdir()):
        leftover.rmdir()
    try:
        os.rename(work, target)
    except OSError:
        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(work, staging)
        os.rename(staging, target)
        shutil.rmtree(work)
    return target


def read_manifest(folder: Path) -> RunManifest:
    return RunManifest.model_validate(json.loads((folder / MANIFEST_JSON).read_text(encoding="utf-8")))
