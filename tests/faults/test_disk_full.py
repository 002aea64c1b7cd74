"""A real full disk (a small tmpfs in a private mount namespace, `unshare -rm`), not an injected error:
full while planning, during a shot's encode, and while delivering the cut. Each time `nightshift serve`
keeps running, says the disk is full, fails nothing, leaves no half-written file, and finishes the
night once space is freed. The scenarios themselves are in tests/faults/disk_full.py.

Skipped where unprivileged user namespaces (or tmpfs mounts in them) are not allowed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.test_kill_points import REPO


def _namespaces_work(tmp: Path) -> str:
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0"', str(tmp)],
                           capture_output=True, text=True, check=False)
    return "" if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


@pytest.mark.slow  # about 75 s for the three; .ci/run runs them after the default suite (pytest -m slow FILE)
@pytest.mark.parametrize("scenario", ["plan", "render", "deliver"])
def test_a_full_disk_pauses_the_night_and_loses_nothing(scenario: str, tmp_path: Path) -> None:
    mount = tmp_path / "disk"
    mount.mkdir()
    why_not = _namespaces_work(mount)
    if why_not:
        pytest.skip(why_not)
    result_path = tmp_path / f"{scenario}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSHIFT_")}
    env.update({"PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect-home"), "DO_NOT_TRACK": "1"})
    inner = 'mount -t tmpfs -o size=8m tmpfs "$0" && exec "$3" -m tests.faults.disk_full "$0" "$1" "$2"'
    done = subprocess.run(["unshare", "-rm", "sh", "-c", inner, str(mount), str(result_path), scenario, sys.executable],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and result_path.is_file(), done.stderr[-3000:]
    result = json.loads(result_path.read_text())

    full, said, end = result["while_full"], "\n".join(result["said"]), result["end"]
    assert result["serve_alive_while_full"] and result["serve_exit"] == 0
    assert "No space left on device" in said and "free disk space" in said, said
    assert full["failed"] == [] and full["leftovers"] == [] and full["deliveries"] == []  # nothing failed or half-made
    assert full["claimed"] == ["paper_boat.txt"]  # the script is kept, claimed
    assert full["jobs"] == ([] if scenario == "plan" else ["queued"])  # and its job (if planned) stays queued
    # Space freed: the same serve process finishes the night.
    assert end["jobs"] == ["delivered"] and end["done"] == ["paper_boat.txt"] and end["verified"] == [True]
    assert end["failed"] == [] and end["claimed"] == [] and end["leftovers"] == []
