"""The progressive night (issue 21): drafts of every shot first, finals until the window closes, a complete cut
at dawn that verifies; the next night upgrades only the drafts, into a new version; a forecast that holds.

The window test runs `nightshift serve` as users do (against a Prefect server), with a tiny random-weight
LTX-Video model through diffusers on the CPU, its rungs made cheap and distinct: a final is 40 steps at
96x96, a draft 2 steps at 64x64 with the cheap 4K fit, so about six drafts and one or two finals fit in the
window the test sets (a few seconds, to the second: windows take HH:MM:SS). The order test drives the same
engine loop in this process with the animatic's draft rung.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from nightshift.config import load_settings
from nightshift.delivery import read_manifest
from nightshift.engine import NightEngine
from nightshift.inbox import claim
from nightshift.jobs import JobStore
from nightshift.leases import LeaseBook
from nightshift.plan_files import load_plan_folder
from nightshift.renderers import tiny_models
from nightshift.review import ReviewBook
from nightshift.steps import Stop
from nightshift.verify import verify_delivery

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "test-output" / "progressive"
RENDERING = re.compile(r"(?P<title>[A-Z][^:\n]*): (?P<shot>s\d{2}-sh\d{2}) (?P<rung>draft|final) rendering")

DIFFUSERS_NIGHT = """
[planner]
kind = "rules"
[render]
renderer = "diffusers"
device = "cpu"
family = "ltx"
model_id = "{model}"
width = 96
height = 96
fps = 6
steps = 40
guidance = 1.0
quantization = "none"
output_width = 128
output_height = 72
[render.draft]
steps = 2
scale = 0.5
[night]
stable_s = 0
poll_s = 0.2
grace_s = 0
cut_every_s = 0
window_start = "{start}"
window_end = "{end}"
"""


@pytest.fixture(scope="module")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_ltx(tmp_path_factory.mktemp("tiny-ltx") / "ltx")


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")


def _night(project: Path, api: str, model: Path, opens_in_s: float, length_s: float, log: Path) -> None:
    """`nightshift serve` for one window that opens in `opens_in_s` and lasts `length_s`; stopped (SIGTERM, as
    a user's Ctrl-C) once it has said the night's summary."""
    start = datetime.now() + timedelta(seconds=opens_in_s)
    (project / "nightshift.toml").write_text(DIFFUSERS_NIGHT.format(
        model=model, start=_clock(start), end=_clock(start + timedelta(seconds=length_s))))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTSHIFT_", "PREFECT_"))}
    env.update({"PREFECT_API_URL": api, "PYTHONPATH": str(REPO)})
    with open(log, "a", encoding="utf-8") as out:
        serve = subprocess.Popen([sys.executable, "-m", "nightshift.cli", "serve"], cwd=project, env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + opens_in_s + length_s + 60
    try:
        while "stopped at the window's end" not in log.read_text() and "waste (" not in log.read_text():
            assert serve.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        while "waste (" not in log.read_text():  # the summary follows the stopped shot
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)


def _tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_ino)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _renders(text: str) -> list[tuple[str, str]]:
    return [(m["shot"], m["rung"]) for m in RENDERING.finditer(text)]


def test_a_window_too_short_ends_with_a_whole_cut_and_the_next_night_upgrades_only_the_drafts(
        tmp_path: Path, prefect_api: str, tiny_ltx: Path) -> None:
    project = tmp_path / "studio"
    (project / "inbox").mkdir(parents=True)
    shutil.copyfile(REPO / "examples" / "corpus" / "night_train.md", project / "inbox" / "night_train.md")
    night1 = tmp_path / "night1.log"
    _night(project, prefect_api, tiny_ltx, opens_in_s=10, length_s=20, log=night1)

    # Dawn: one delivery, complete, verifying; finals for the first shots, drafts for the rest, and it says so.
    days = [d for d in (project / "output").iterdir() if d.is_dir()]
    cuts = [c for d in days for c in d.iterdir()]
    assert [c.name for c in cuts] == ["night-train"], cuts  # nothing hidden or half-made left beside it
    cut = cuts[0]
    assert verify_delivery(cut).ok, verify_delivery(cut).problems
    manifest = read_manifest(cut)
    rungs = [clip.rung for clip in manifest.clips]
    finals = rungs.count("final")
    assert 1 <= finals < len(rungs) and rungs == ["final"] * finals + ["draft"] * (len(rungs) - finals), rungs
    assert manifest.rungs == {"final": finals, "draft": len(rungs) - finals}
    assert "The quality ladder:" in (cut / "manifest.md").read_text() and "| draft |" in (cut / "manifest.md").read_text()
    for clip in manifest.clips:  # each rung's spec recorded and hashed; a draft stands for the plan's final
        if clip.rung == "draft":
            assert clip.rung_spec["steps"] == 2 and clip.rung_spec["width"] == 64 and clip.stands_for
    drafts = _renders(night1.read_text())
    first_final = next(i for i, (_, rung) in enumerate(drafts) if rung == "final")
    assert [rung for _, rung in drafts[:first_final]] == ["draft"] * len(rungs)  # every draft before any final
    # The window closed mid-shot: it was stopped (grace 0), nothing of it delivered, no lease left behind.
    text = night1.read_text()
    stopped = len(re.findall(r"(?:draft|final) stopped at the window's end", text))
    summary_files = list((project / ".nightshift" / "nights").glob("*/summary-*.json"))
    assert len(summary_files) == 1
    summary = json.loads(summary_files[0].read_text())
    assert summary["shots_stopped"] == stopped and summary["render_s"] > 0
    assert summary["waste_s"] <= summary["render_s"] * (1.0 if stopped else 0.01)
    leases = LeaseBook.of(project / ".nightshift" / "leases", 60)
    assert all(leases.busy(p.stem) is None for p in (project / ".nightshift" / "leases").glob("*.lock"))
    job = JobStore(project / ".nightshift" / "jobs").all()[0]
    assert job.state in ("queued", "rendering") and Path(job.cut) == cut and job.rungs == ["draft", "final"]

    # Dusk: the forecast for the coming night, from this machine's recorded renders.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTSHIFT_", "PREFECT_"))}
    start = datetime.now() + timedelta(seconds=8)
    (project / "nightshift.toml").write_text(DIFFUSERS_NIGHT.format(
        model=tiny_ltx, start=_clock(start), end=_clock(start + timedelta(seconds=14))))
    asked = subprocess.run([sys.executable, "-m", "nightshift.cli", "queue", "--forecast", "--json"], cwd=project,
                           env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True)
    forecast = json.loads(asked.stdout)["forecast"]
    assert forecast["jobs"][0]["now"] == {"draft": 6, "final": finals}
    assert "this machine's renders" in forecast["basis"]
    printed = subprocess.run([sys.executable, "-m", "nightshift.cli", "queue", "--forecast"], cwd=project,
                             env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True).stdout
    assert re.search(r"by \d\d:\d\d:\d\d: 6/6 drafts, \d/6 finals \(estimated, within \d+%\)", printed), printed

    before = _tree_digest(cut)
    night2 = tmp_path / "night2.log"
    _night(project, prefect_api, tiny_ltx, opens_in_s=8, length_s=14, log=night2)
    upgraded = _renders(night2.read_text())
    assert upgraded and all(rung == "final" for _, rung in upgraded)
    assert {shot for shot, _ in upgraded} <= {c.shot_id for c in manifest.clips if c.rung == "draft"}
    assert _tree_digest(cut) == before  # an earlier night's version is never touched
    versions = [c for c in cut.parent.parent.rglob("night-train-v2")]
    assert len(versions) == 1, list((project / "output").rglob("*"))
    v2 = versions[0]
    assert verify_delivery(v2).ok, verify_delivery(v2).problems
    second = read_manifest(v2)
    assert second.version == 2 and second.parent.path == cut.relative_to(project / "output").as_posix()
    newer = {c.shot_id for c in second.clips if c.rung == "final"} - {c.shot_id for c in manifest.clips
                                                                          if c.rung == "final"}
    assert newer and set(second.carried_shots) == {c.shot_id for c in manifest.clips} - newer
    for shot in second.carried_shots:  # the same bytes: the parent's very file
        assert (v2 / "shots" / f"{shot}.mp4").stat().st_ino == (cut / "shots" / f"{shot}.mp4").stat().st_ino

    # What the Prefect UI shows: the forecast and the night's summary as artifacts; no GPU slot left held.
    artifacts = httpx.post(f"{prefect_api}/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["forecast", "night-summary"]}}, "sort": "CREATED_DESC", "limit": 50}).json()
    shown = {a["key"]: a["data"] for a in reversed(artifacts)}  # the latest of each
    assert shown["forecast"].startswith("# Tonight: by ") and "| Night Train | 6 |" in shown["forecast"]
    assert "waste" in shown["night-summary"] and "forecast at the window's start" in shown["night-summary"]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for key, markdown in shown.items():  # kept to be read: test-output/progressive/
        (OUTPUT / f"{key}.md").write_text(markdown)
    (OUTPUT / "queue-forecast.txt").write_text(printed)
    limits = httpx.post(f"{prefect_api}/v2/concurrency_limits/filter", json={}).json()
    assert [l["name"] for l in limits if l["name"].startswith("nightshift-gpu") and l["active_slots"]] == []

    # The forecast made at dusk against what the night did: within the error it stated.
    ledger = [json.loads(line) for p in (project / ".nightshift" / "nights").glob("*/*.jsonl")
              for line in p.read_text().splitlines()]
    night2_renders = [e for e in ledger if e["kind"] == "render" and e["at"] >= start.isoformat(timespec="seconds")]
    actual = sum(e["seconds"] for e in night2_renders)
    predicted = sum(forecast["predicted"][f"Night Train {e['shot']} final"] for e in night2_renders)
    assert abs(actual - predicted) <= max(forecast["uncertainty"], 0.1) * actual + 0.5, (actual, predicted, forecast)


PAPER_BOAT_FIRST = """
[planner]
kind = "rules"
[render]
renderer = "animatic"
fps = 4
width = 128
height = 96
output_width = 128
output_height = 72
[render.draft]
animatic = true
[night]
stable_s = 0
cut_every_s = 0
"""


def test_priorities_and_review_marks_order_the_finals_not_the_drafts(tmp_path: Path) -> None:
    (tmp_path / "nightshift.toml").write_text(PAPER_BOAT_FIRST)
    (tmp_path / "inbox").mkdir()
    settings = load_settings(tmp_path / "nightshift.toml")
    said: list[str] = []
    stop = Stop()

    def say(line: str) -> None:
        said.append(line)
        if sum(bool(re.search(r": cut at \S+ \(\d+ draft\)$", s)) for s in said) == 2:
            stop.request()  # both cuts made: the night is stopped, as by Ctrl-C, before any final

    engine = NightEngine(settings, respect_window=False, say=say, stop=stop)
    for count, name in ((1, "paper_boat.txt"), (2, "night_train.md")):  # planned in this order: they arrive so
        shutil.copyfile(REPO / "examples" / "corpus" / name, tmp_path / "inbox" / name)
        deadline = time.monotonic() + 30
        while len(engine.store.all()) < count and time.monotonic() < deadline:
            engine.intake.take_drops()
            time.sleep(0.1)
    boat, train = engine.store.all()
    engine.store.set_priority(train.id, 5)  # the later script first: for its finals, not its drafts
    engine.serve(once=True)
    first = _renders("\n".join(said))
    assert first == [(f"s01-sh0{i}", "draft") for i in (1, 2, 3)] + [
        (s.shot_id, "draft") for s in _specs(engine, train.id)], first
    boat = engine.store.load(boat.id)
    key = Path(boat.cut).relative_to(engine.output).as_posix()
    ReviewBook(settings).mark(key, ["s01-sh03"], "redo", note="the boat should be smaller")

    said.clear()
    NightEngine(settings, respect_window=False, say=said.append, stop=Stop()).serve(once=True)
    finals = _renders("\n".join(said))
    train_finals = [(s.shot_id, "final") for s in _specs(engine, train.id)]
    assert finals[:len(train_finals)] == train_finals  # priority first
    assert finals[len(train_finals):len(train_finals) + 3] == [("s01-sh03", "final"), ("s01-sh01", "final"),
                                                               ("s01-sh02", "final")]  # the marked shot first
    # The redo waited for the film's final delivery and was made from it: its own take, in a version beside it.
    jobs = {j.id: j for j in engine.store.all()}
    assert all(j.state == "delivered" for j in jobs.values()), {j.id: j.state for j in jobs.values()}
    redo = next(j for j in jobs.values() if j.redo)
    assert redo.redo.after_job == boat.id and Path(redo.redo.from_folder) == Path(jobs[boat.id].delivery)
    assert verify_delivery(Path(redo.delivery)).ok and read_manifest(Path(redo.delivery)).version == 2

    # Killed between swapping a cut into place and saving the job, restarted on a later night: the cut in place
    # keeps its own night, so that night's upgrade makes a new version beside it instead of replacing it.
    train = jobs[train.id].model_copy(update={"cut": None, "cut_night": None, "publishing_to": jobs[train.id].delivery,
                                              "publishing_night": "2026-11-30"})
    engine.cuts.adopt_interrupted(train)
    train = engine.store.load(train.id)
    assert (train.cut, train.cut_night, train.publishing_to) == (jobs[train.id].delivery, "2026-11-30", None)
    assert engine.cuts.stale(train)  # tonight is another night: the next cut is a new version


def _specs(engine: NightEngine, job_id: str) -> list:
    job = engine.store.load(job_id)
    return load_plan_folder(Path(job.cut or job.work_folder))[1].specs


THREE_RUNGS = DIFFUSERS_NIGHT.replace("steps = 40\n", "steps = 4\n").replace(
    "window_start = \"{start}\"\nwindow_end = \"{end}\"\n", "rungs = [\"animatic\", \"draft\", \"final\"]\n")
CUT_SAID = re.compile(r": cut at (?P<folder>\S+) \((?P<rungs>[^)]*)\)$")


@pytest.mark.slow  # about 30 s (nine renders, two cuts and a delivery); .ci/run runs it after the default suite
def test_three_rungs_climb_animatic_then_draft_then_final_with_a_cut_after_each_pass(tmp_path: Path,
                                                                                    tiny_ltx: Path) -> None:
    """`night.rungs = ["animatic", "draft", "final"]` with a diffusers model, one script run at once (as
    `nightshift run` does): every shot's animatic, then a cut; every draft, then every final, the cut brought up
    to date as each lands; the delivery. Each cut verifies when it is made and says which rung each shot is at."""
    (tmp_path / "nightshift.toml").write_text(THREE_RUNGS.format(model=tiny_ltx))
    (tmp_path / "inbox").mkdir()
    shutil.copyfile(REPO / "examples" / "corpus" / "paper_boat.txt", tmp_path / "inbox" / "paper_boat.txt")
    settings = load_settings(tmp_path / "nightshift.toml")
    said: list[str] = []
    cuts: list[tuple[Path, str, dict[str, int], bool]] = []

    def say(line: str) -> None:
        said.append(line)
        if (found := CUT_SAID.search(line)) is not None:  # looked at as it is made: the next pass replaces it
            folder = Path(found["folder"])
            cuts.append((folder, found["rungs"], read_manifest(folder).rungs, verify_delivery(folder).ok))

    engine = NightEngine(settings, respect_window=False, say=say)
    outcome = engine.run_claim(claim(tmp_path / "inbox" / "paper_boat.txt", tmp_path / "inbox").path)
    assert outcome.status == "delivered", (outcome.message, said[-20:])
    renders = re.findall(r": (s\d{2}-sh\d{2}) (animatic|draft|final) rendering", "\n".join(said))
    shots = [f"s01-sh0{i}" for i in (1, 2, 3)]
    assert renders == [(s, rung) for rung in ("animatic", "draft", "final") for s in shots], renders
    delivery = Path(outcome.delivery)
    # The cut after the animatic pass, then brought up to date as each better clip lands (night.cut_every_s = 0).
    assert [(said_rungs, rungs, ok) for _, said_rungs, rungs, ok in cuts] == [
        ("3 animatic", {"animatic": 3}, True), ("1 draft, 2 animatic", {"draft": 1, "animatic": 2}, True),
        ("2 draft, 1 animatic", {"draft": 2, "animatic": 1}, True), ("3 draft", {"draft": 3}, True),
        ("1 final, 2 draft", {"final": 1, "draft": 2}, True), ("2 final, 1 draft", {"final": 2, "draft": 1}, True)], cuts
    assert {folder for folder, *_ in cuts} == {delivery}
    manifest = read_manifest(delivery)
    assert manifest.rungs == {"final": 3} and verify_delivery(delivery).ok
    assert [(c.animatic, c.backend, c.rung) for c in manifest.clips] == [(False, "diffusers:ltx", "final")] * 3
    assert [p.name for p in delivery.parent.iterdir()] == [delivery.name]  # one folder, swapped in place each time
