"""Load: 200 scripts dropped at once and 20 more while the night runs; each delivered exactly once, in
arrival order except the five the user moved up mid-night with `nightshift queue --priority`, with the
serving process's memory flat. Marked slow (about 30 s on 2 cores):

    .venv/bin/python -m pytest -m slow tests/faults/test_load.py -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from nightshift.delivery import read_manifest
from tests.faults.test_kill_points import PROJECT_TOML, REPO, serve_command


def _script(n: int) -> str:
    return f"Title: Load {n:03d}\n\nINT. ROOM {n} - DAY\n\nA lamp flickers {n} times.\n\n"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 220 scripts through `nightshift serve` with its Prefect flow runs: many minutes
def test_two_hundred_at_once_and_twenty_during_the_night(tmp_path: Path, prefect_api: str) -> None:
    project = tmp_path / "project"
    (project / "inbox").mkdir(parents=True)
    (project / "nightshift.toml").write_text(PROJECT_TOML)
    for n in range(200):
        path = project / "inbox" / f"load-{n:03d}.fountain"
        path.write_text(_script(n))
        os.utime(path, ns=(n * 1_000_000, n * 1_000_000))  # arrival order = the numbering
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTSHIFT_", "PREFECT_"))}
    env.update({"PYTHONPATH": str(REPO), "PREFECT_API_URL": prefect_api})
    started = time.monotonic()
    log = tmp_path / "serve.log"  # a file, not a pipe: a night's logs would fill a pipe and block serve
    driver = subprocess.Popen(serve_command(), cwd=project, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(log, "w"), text=True)
    samples: list[tuple[int, int]] = []  # (deliveries so far, RSS bytes)

    def sample() -> None:
        process = psutil.Process(driver.pid)
        while driver.poll() is None:
            try:
                rss = process.memory_info().rss
            except psutil.NoSuchProcess:
                return
            samples.append((len(list((project / "output").glob("*/*/manifest.json"))), rss))
            time.sleep(0.5)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    while len(list((project / "output").glob("*/*/manifest.json"))) < 50 and driver.poll() is None:
        time.sleep(0.5)
    for n in range(200, 220):  # dropped while the night runs
        (project / "inbox" / f"load-{n:03d}.fountain").write_text(_script(n))
    # The user moves the last five queued scripts up, from another process, while the night runs. Intake runs a
    # few seconds at a time between jobs, so "queued" is whatever is planned and waiting at that moment.
    listed = subprocess.run([sys.executable, "-m", "nightshift.cli", "queue", "--json"], cwd=project, env=env,
                            capture_output=True, text=True, check=True)
    waiting = [e["title"] for e in json.loads(listed.stdout)["jobs"] if e["state"] == "queued"]
    assert len(waiting) >= 5, waiting
    urgent = waiting[-5:]
    delivered_before = len(list((project / "output").glob("*/*/manifest.json")))
    bump = subprocess.run([sys.executable, "-m", "nightshift.cli", "queue", "--priority", "5", *urgent], cwd=project,
                          env=env, capture_output=True, text=True, check=False)
    assert bump.returncode == 0, bump.stderr
    delivered_after = len(list((project / "output").glob("*/*/manifest.json")))
    driver.wait(timeout=3600)
    assert driver.returncode == 0, log.read_text()[-3000:]
    watcher.join(5)
    seconds = time.monotonic() - started

    deliveries = sorted(project.glob("output/*/*/manifest.json"), key=lambda p: read_manifest(p.parent).delivered)
    titles = [read_manifest(p.parent).title for p in deliveries]
    assert sorted(titles) == [f"Load {n:03d}" for n in range(220)]  # each exactly once
    assert [t for t in titles if t not in urgent] == [f"Load {n:03d}" for n in range(220) if f"Load {n:03d}" not in urgent]
    first = titles.index(urgent[0])  # the urgent five: together, in arrival order, from the next job on
    assert titles[first:first + 5] == urgent and delivered_before <= first <= delivered_after + 1, (first, delivered_before)
    assert len(list((project / "inbox" / "done").glob("*.fountain"))) == 220
    early = max(rss for done, rss in samples if done <= 30)
    late = max(rss for done, rss in samples if done >= 190)
    print(f"\n220 scripts in {seconds:.0f} s; the urgent five delivered as numbers {first + 1}-{first + 5} "
          f"(priority set after {delivered_before}-{delivered_after} deliveries); serving process peak RSS {early / 2**20:.0f} MB by delivery 30, "
          f"{late / 2**20:.0f} MB from delivery 190 on ({late / early:.2f}x)")
    assert late < early * 1.25, "memory grows with the number of scripts"
