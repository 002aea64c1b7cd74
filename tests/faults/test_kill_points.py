"""SIGKILL `nightshift serve --now --once` (the process users start, with its Prefect flows, against a
Prefect server) at seeded points across claim, plan, queue, render, upscale, encode and deliver; start
it again; check that every script is delivered exactly once and nothing is lost or doubled.

Default: 7 points (three at a time, about two minutes): one at each stage where the progressive night (the
default) differs (render, upscale, encode, deliver: a draft and a final of every shot, the cut made after the
drafts and swapped in place by the delivery) and one at each stage both nights share (claim, plan, queue) in a
one-rung night. Marked slow (run by .ci/run after the default suite): the one-rung night's render, upscale,
encode and deliver. `pytest tests/faults/test_kill_points.py --soak`: 250 points drawn at random in each night.
The points are (stage, n): the n-th time the night reaches the stage (nightshift/faults.py, counted
across serve and its render children), serve is killed (a kill in a render child takes serve down
with it, as a power cut would); n drawn from how often a clean run reaches it. Clips are small
(64x36) so the points are many; the code paths are the ones a 4K night takes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nightshift.delivery import read_manifest
from nightshift.faults import STAGES
from nightshift.verify import verify_delivery
from nightshift.renderers.encode import probe

SEED = 20261121
REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("paper_boat.txt", "night_train.md")
PROJECT_TOML = """
[planner]
kind = "rules"
[render]
fps = 4
width = 64
height = 48
output_width = 64
output_height = 36
[night]
stable_s = 0
"""
# The progressive night (issue 21): the animatic gets a draft rung, every shot is rendered twice (draft, then
# final), and the job's cut is made after its drafts and swapped in place by its delivery.
PROGRESSIVE = """
[render.draft]
animatic = true
[night]
stable_s = 0
"""
MODES = {"one rung": PROJECT_TOML, "progressive": PROJECT_TOML.replace('[night]\nstable_s = 0\n', '') + PROGRESSIVE}
# Where the two nights differ: claiming, planning and queueing are the same code in both.
MODE_STAGES = {"one rung": STAGES, "progressive": ("render", "upscale", "encode", "deliver")}


def _project(root: Path, toml: str = PROJECT_TOML) -> Path:
    root.mkdir(parents=True)
    (root / "nightshift.toml").write_text(toml)
    (root / "inbox").mkdir()
    for name in SCRIPTS:
        shutil.copyfile(REPO / "examples" / "corpus" / name, root / "inbox" / name)
    return root


SHOT_LINE = re.compile(r"(?:^|- )(?P<title>[^|\n]+?): (?P<shot>s\d{2,}-sh\d{2,})(?: (?P<rung>draft|final))? "
                       r"(?P<kind>rendering|done)\b")


def serve_command() -> list[str]:
    return [sys.executable, "-m", "nightshift.cli", "serve", "--now", "--once", "--renderer", "animatic"]


def drive(project: Path, api: str, fault: str | None = None, timeout: float = 300, env: dict[str, str] | None = None,
          **popen: object) -> subprocess.CompletedProcess:
    """`nightshift serve --now --once` on `project` until idle (or until the failpoint `fault` kills it).
    What it says is appended to project/renders.log, whose shot lines the checks read."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTSHIFT_", "PREFECT_"))}
    clean.update({"PREFECT_API_URL": api, "PYTHONPATH": str(REPO), **(env or {})})
    if fault:
        clean["NIGHTSHIFT_FAULT"] = fault
        clean["NIGHTSHIFT_FAULT_STATE"] = str(project / "fault-state.txt")
    done = subprocess.run(serve_command(), cwd=project, env=clean, capture_output=True, text=True, timeout=timeout,
                          check=False, **popen)
    with open(project / "renders.log", "a", encoding="utf-8") as log:
        log.write(done.stdout + done.stderr)
    return done


def check_night(project: Path) -> list[str]:
    """Every invariant the issue names; returns what broke (empty: the night is whole)."""
    broken = []
    deliveries = [p for p in (project / "output").glob("*/*") if (p / "manifest.json").is_file()]
    names = Counter(read_manifest(p).inputs.script.name for p in deliveries)
    for name in SCRIPTS:
        if names[name] != 1:
            broken.append(f"{name} delivered {names[name]} times")
    for folder in deliveries:
        report = verify_delivery(folder)
        broken += [f"{folder.name}: {problem}" for problem in report.problems]
        for clip in read_manifest(folder).clips:
            info = probe(folder / clip.file)
            if info.frames != clip.frames:
                broken.append(f"{folder.name}/{clip.file}: decodes to {info.frames} frames, not {clip.frames}")
    stray = [p for p in (project / "output").rglob("*") if p.name.startswith(".") or ".partial" in p.name]
    broken += [f"stray in output/: {p.relative_to(project)}" for p in stray]
    for name in SCRIPTS:
        if not (project / "inbox" / "done" / name).is_file():
            where = [str(p.relative_to(project)) for p in project.rglob(name)]
            broken.append(f"{name} is not in inbox/done/ (found: {where})")
    if any((project / "inbox" / ".claimed").rglob("*.*")):
        broken.append("a claim was left in inbox/.claimed/")
    starts: Counter[str] = Counter()
    ended: set[str] = set()
    for line in (project / "renders.log").read_text().splitlines():
        found = SHOT_LINE.search(line)
        if not found:
            continue
        kind, job = "start" if found["kind"] == "rendering" else "end", found["title"].replace(" ", "_")
        shot = f"{found['shot']}{'@' + found['rung'] if found['rung'] else ''}"  # each rung renders once
        if kind == "start" and starts[f"{job} {shot}"] and f"{job} {shot}" in ended:
            broken.append(f"{shot} of {job} rendered again after it had finished")
        (starts.update([f"{job} {shot}"]) if kind == "start" else ended.add(f"{job} {shot}"))
    again = [key for key, count in starts.items() if count > 1]
    if len(again) > 1 or any(starts[key] > 2 for key in again):
        broken.append(f"re-rendered beyond the interrupted shot: {again}")
    jobs = [json.loads(p.read_text()) for p in (project / ".nightshift" / "jobs").glob("*.json")]
    broken += [f"job {j['id']} left {j['state']}" for j in jobs if j["state"] not in ("delivered",)]
    return broken


def _points(tmp_path: Path, count: int, api: str, toml: str = PROJECT_TOML,
            stages: tuple[str, ...] = STAGES) -> list[tuple[str, int]]:
    """Seeded (stage, n) points within how often a clean run reaches each stage."""
    project = _project(tmp_path / "count", toml)
    tally = project / "reached.txt"
    done = drive(project, api, f"count:{tally}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not check_night(project), check_night(project)  # the clean run itself is whole
    reached = Counter(tally.read_text().split())
    assert set(reached) == set(STAGES), reached
    rng = random.Random(SEED)
    if count < 100:  # the default run: every stage, the same number of times (a random draw may miss one)
        return [(stage, rng.randint(1, reached[stage])) for stage in stages for _ in range(count // len(stages))]
    return [(stage, rng.randint(1, reached[stage])) for stage in (rng.choice(stages) for _ in range(count))]


def _kill_and_recover(tmp_path: Path, api: str, index: int, stage: str, n: int,
                      toml: str = PROJECT_TOML) -> tuple[str, int, bool, list[str]]:
    project = _project(tmp_path / f"point-{index:03d}-{stage}-{n}", toml)
    first = drive(project, api, f"{stage}:{n}")
    killed = first.returncode == -9
    if not killed and first.returncode != 0:
        return stage, n, killed, [f"the first run failed: {first.stderr[-1500:]}"]
    second = drive(project, api, None)
    if second.returncode != 0:
        return stage, n, killed, [f"the restart failed: {second.stderr[-1500:]}"]
    broken = check_night(project)
    if not broken:
        shutil.rmtree(project)  # keep failures only, for a look afterwards
    print(f"point {index:03d} {stage}:{n} killed={killed} {'whole' if not broken else 'BROKEN: ' + '; '.join(broken)}",
          flush=True)  # progress, with -s: the soak runs for more than an hour
    return stage, n, killed, broken


# The default suite kills the night users get by default where it is its own (a progressive night's render,
# upscale, encode and deliver) and the stages both nights share (claim, plan, queue) in the one-rung night; the
# one-rung night's own render, upscale, encode and deliver are marked slow (about 90 s; .ci/run runs them after
# the default suite, pytest -m slow FILE, to keep that within 15 minutes). --soak: 250 points in each night,
# drawn from all its stages (the "default" case).
GROUPS = {
    "default": {"one rung": ("claim", "plan", "queue"), "progressive": MODE_STAGES["progressive"]},
    "rest": {"one rung": ("render", "upscale", "encode", "deliver")},
}


@pytest.mark.timeout(10800)  # the soak runs 1.5-2 hours through `nightshift serve`; each run has its own 300 s limit
@pytest.mark.parametrize("group", ["default", pytest.param("rest", marks=pytest.mark.slow)])
def test_killed_anywhere_the_night_still_completes_once(tmp_path: Path, request: pytest.FixtureRequest,
                                                        prefect_api: str, group: str) -> None:
    soak = request.config.getoption("--soak")
    if soak and group != "default":
        pytest.skip("the soak draws from every stage of both nights in the default case")
    nights = {mode: MODE_STAGES[mode] for mode in MODES} if soak else GROUPS[group]
    with ThreadPoolExecutor(max_workers=3) as pool:  # both nights' points share one pool of three (2 cores)
        drawn = dict(zip(nights, pool.map(lambda mode: _points(
            tmp_path / mode.replace(" ", "-"), 250 if soak else len(nights[mode]), prefect_api, MODES[mode],
            nights[mode]), nights)))
        work = [(mode, point) for mode, points in drawn.items() for point in points]

        def point(index: int, mode: str, stage: str, n: int) -> tuple[str, tuple[str, int, bool, list[str]]]:
            return mode, _kill_and_recover(tmp_path / mode.replace(" ", "-"), prefect_api, index, stage, n,
                                           MODES[mode])

        results = list(pool.map(lambda item: point(item[0], item[1][0], *item[1][1]), enumerate(work)))
    for mode, stages in nights.items():
        mine = [r for m, r in results if m == mode]
        per_stage = {stage: [r for r in mine if r[0] == stage] for stage in stages}
        summary = ", ".join(f"{s} {sum(r[2] for r in rs)}/{len(rs)}" for s, rs in per_stage.items())
        print(f"\nfault points (killed/drawn), {mode} night, seed {SEED}: {summary}")
    failures = [f"{mode} {stage}:{n}: {'; '.join(broken)}" for mode, (stage, n, _, broken) in results if broken]
    assert not failures, "\n".join(failures)
    assert sum(r[2] for _, r in results) >= len(work) * 0.9, "most points must really kill the process"
