"""Run inside a private mount namespace whose project folder is a small tmpfs (tests/faults/test_disk_full.py):

    unshare -rm sh -c 'mount -t tmpfs -o size=8m tmpfs "$0" && exec python -m tests.faults.disk_full "$0" "$1" "$2"' \\
        MOUNT RESULT_JSON SCENARIO

A real full disk, not an injected error: a ballast file takes all but a few KB, so the next big
write fails with the kernel's ENOSPC wherever it lands. `nightshift serve --now --once` runs the
night (Prefect's embedded server keeps its database outside the tmpfs, in PREFECT_HOME). Scenarios:
  plan     full before serve starts: the script is claimed but cannot be planned
  render   full once the script is planned: the first shot's render fails (in the render child)
  deliver  room for every shot but not for the cut
Each run records what serve said and left while the disk was full to RESULT_JSON (outside the
tmpfs), frees the space, lets serve finish, and records the end state; the test asserts on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nightshift.engine import NightEngine
from nightshift.config import load_settings
from nightshift.inbox import claim, leftover_claims
from nightshift.verify import verify_delivery

REPO = Path(__file__).resolve().parents[2]
TOML = ('[planner]\nkind = "rules"\n[render]\nrenderer = "animatic"\nfps = 8\nwidth = 256\nheight = 160\n'
        'output_width = 640\noutput_height = 360\n[night]\nstable_s = 0\npoll_s = 0.2\n')


def fill(folder: Path, leave: int) -> Path:
    """Take all but `leave` bytes of the file system with one ballast file."""
    ballast = folder / "ballast.bin"
    size = shutil.disk_usage(folder).free - leave
    with open(ballast, "wb") as handle:
        handle.truncate(0)
        chunk = b"\0" * (1 << 16)
        while size > 0:
            size -= handle.write(chunk[: min(len(chunk), size)])
    return ballast


def leftovers(project: Path) -> list[str]:
    """Half-written files: temporary, partial or hidden staging files anywhere under the project."""
    names = (".tmp", ".partial")
    return sorted(str(p.relative_to(project)) for p in project.rglob("*")
                  if p.is_file() and (any(n in p.name for n in names) or "/.work/" in str(p)))


def state(project: Path, settings) -> dict:  # noqa: ANN001
    store = NightEngine(settings).store
    inbox = project / "inbox"
    return {"jobs": [j.state for j in store.all()], "pending": len(store.pending()),
            "claimed": [p.name for p in leftover_claims(inbox)],
            "done": sorted(p.name for p in (inbox / "done").glob("*")) if (inbox / "done").is_dir() else [],
            "failed": sorted(p.name for p in (inbox / "failed").glob("*")) if (inbox / "failed").is_dir() else [],
            "deliveries": [str(p.parent.relative_to(project)) for p in project.glob("output/*/*/manifest.json")],
            "leftovers": leftovers(project), "free": shutil.disk_usage(project).free}


def serve_through_full_disk(project: Path, settings, ballast: Path, log: Path, wait_for: str) -> dict:  # noqa: ANN001
    """`nightshift serve --now --once` on the full disk: record what it says and leaves, free the space, let it finish."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    serve = subprocess.Popen([sys.executable, "-m", "nightshift.cli", "serve", "--now", "--once"], cwd=project,
                             env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + 300
    while wait_for not in log.read_text() and serve.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = {"while_full": state(project, settings), "serve_alive_while_full": serve.poll() is None}
    ballast.unlink()
    seen["serve_exit"] = serve.wait(timeout=600)
    seen["said"] = [line for line in log.read_text().splitlines()
                    if "space" in line and "|" not in line or line.startswith("The queue waits")]
    return seen


def main(mount: Path, result_path: Path, scenario: str) -> None:
    project = mount / "project"
    (project / "inbox").mkdir(parents=True)
    (project / "nightshift.toml").write_text(TOML)
    shutil.copyfile(REPO / "examples" / "corpus" / "paper_boat.txt", project / "inbox" / "paper_boat.txt")
    settings = load_settings(project / "nightshift.toml")
    inbox = project / "inbox"
    result: dict = {"scenario": scenario, "size": shutil.disk_usage(mount).total}

    if scenario == "plan":  # full before serve starts: the script is claimed (a rename) but cannot be planned
        ballast, wait_for = fill(mount, 16 << 10), "it stays claimed"
    else:  # planned first; then room for less than the first shot (render), or for every shot but not the cut
        NightEngine(settings).intake.claim(claim(inbox / "paper_boat.txt", inbox).path)
        ballast, wait_for = fill(mount, 96 << 10 if scenario == "render" else 320 << 10), "The queue waits"
    result.update(serve_through_full_disk(project, settings, ballast, result_path.with_suffix(".log"), wait_for))
    end = state(project, settings)
    end["verified"] = [verify_delivery(project / d).ok for d in end["deliveries"]]
    result["end"] = end
    result_path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
