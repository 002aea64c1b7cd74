"""Delivery: the dated folder a user opens in the morning, and the run's record of what was made.

output/YYYY-MM-DD/<script-slug>/ (the date the night's run started; a second
delivery of the same script that day gets -2, -3 ...). The job's work folder is
moved there only once the cut and the manifest are written, so a delivery
folder that exists is a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from nightshift.provenance import MANIFEST_JSON, Manifest


def delivery_folder(output_root: Path, night: datetime, slug: str) -> Path:
    day = output_root / night.strftime("%Y-%m-%d")
    target, n = day / slug, 2
    while target.exists():
        target = day / f"{slug}-{n}"
        n += 1
    return target


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
        try:
            shutil.copytree(work, staging)
        except BaseException:  # a full output disk: no half delivery left behind; the work folder is intact
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.rename(staging, target)
        shutil.rmtree(work)
    return target


def read_manifest(folder: Path) -> Manifest:
    return Manifest.model_validate(json.loads((folder / MANIFEST_JSON).read_text(encoding="utf-8")))
