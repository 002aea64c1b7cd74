"""The night engine (nightshift/engine.py) as users run it: several `nightshift serve` processes on one studio,
"machines" with their own temporary folders, drops written slowly or under odd names, stops at each stage,
tampered records, long ids, bad configuration and runaway templates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from nightshift.cli import main
from nightshift.cli_night import stop_on_signals
from nightshift.config import Settings, load_settings
from nightshift.delivery import read_manifest
from nightshift.engine import NightEngine
from nightshift.errors import NightshiftError
from nightshift.files import NAME_MAX_BYTES
from nightshift.inbox import claim
from nightshift.leases import LeaseBook, Owner
from nightshift.machine import machine_name
from nightshift.schemas import Shot
from nightshift.templating import TemplateSet
from nightshift.verify import verify_delivery
from tests.faults.test_kill_points import PROJECT_TOML, REPO, SCRIPTS, _project, check_night, serve_command

CORPUS = REPO / "examples" / "corpus"


def _env(api: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTSHIFT_", "PREFECT_"))}
    return {**env, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO), **extra}


def _deliveries(project: Path) -> list[Path]:
    return [p.parent for p in project.glob("output/*/*/manifest.json")]


def test_two_serves_and_two_machines_on_one_studio_deliver_each_script_once(tmp_path: Path, prefect_api: str) -> None:
    """Three `nightshift serve` processes at once on one studio, two of them with temporary folders and host
    names of their own (what separate machines look like): every script planned once, delivered once, green."""
    project = _project(tmp_path / "studio")
    (project / "nightshift.toml").write_text(PROJECT_TOML.replace("stable_s = 0", "stable_s = 0\npoll_s = 0.2"))
    shutil.copyfile(CORPUS / "courier.fountain", project / "inbox" / "courier.fountain")
    runs = []
    for n in range(3):
        temp = tmp_path / f"tmp-{n}"
        temp.mkdir()
        runs.append(subprocess.Popen(serve_command(), cwd=project, env=_env(prefect_api, TMPDIR=str(temp)),
                                     stdout=open(temp / "serve.log", "w"), stderr=subprocess.STDOUT))
    for run in runs:
        run.wait(timeout=600)
    said = [(tmp_path / f"tmp-{n}" / "serve.log").read_text() for n in range(3)]
    assert [run.returncode for run in runs] == [0, 0, 0], said
    names = Counter(read_manifest(p).inputs.script.name for p in _deliveries(project))
    assert names == Counter({**{s: 1 for s in SCRIPTS}, "courier.fountain": 1}), (names, said)
    assert all(verify_delivery(p).ok for p in _deliveries(project))
    jobs = [json.loads(p.read_text()) for p in (project / ".nightshift" / "jobs").glob("*.json")]
    assert sorted(j["state"] for j in jobs) == ["delivered"] * 3  # never planned twice
    assert not any("Traceback" in text or "FileNotFoundError" in text for text in said), said
    assert all(j["delivered_by"] for j in jobs)


def test_lease_is_taken_only_from_an_owner_that_is_gone(tmp_path: Path) -> None:
    book = LeaseBook(tmp_path / "leases", ttl_s=0.5)
    other = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from nightshift.leases import LeaseBook\n"
        f"lease = LeaseBook(Path({str(tmp_path / 'leases')!r})).take('job-x', 'a test owner')\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "held"
    held = book.take("job-x")
    assert isinstance(held, Owner) and held.pid == other.pid and "a test owner" in held.describe()
    other.kill()
    other.wait()
    taken = book.take("job-x")  # the owner is provably gone: its pid is dead (and the kernel let the lock go)
    assert not isinstance(taken, Owner)
    again = book.take("job-x")  # re-entrant within a process
    assert again is taken
    again.release()
    taken.release()
    # A record from another machine that still renews is respected even where its lock does not reach us.
    record = tmp_path / "leases" / "job-y.json"
    record.write_text(json.dumps({"host": "render-2", "pid": 1, "boot": "b", "since": time.time(),
                                  "expires": time.time() + 60, "what": "rendering job y"}))
    assert isinstance(book.take("job-y"), Owner)
    record.write_text(json.dumps({"host": "render-2", "pid": 1, "boot": "b", "since": 0, "expires": 1}))
    assert not isinstance(book.take("job-y"), Owner)  # expired: that machine stopped renewing


def test_a_drop_is_taken_only_when_complete_whatever_its_name(tmp_path: Path) -> None:
    project = tmp_path / "studio"
    (project / "inbox").mkdir(parents=True)
    settings = Settings(project_dir=project, planner={"kind": "rules"}, night={"stable_s": 0.3})
    engine = NightEngine(settings, say=lambda _m: None)
    inbox = project / "inbox"
    slow = inbox / "slow.fountain"
    with open(slow, "w") as writer:  # a writer that keeps the file open: a line, a long pause, another line
        writer.write("INT. ROOM - DAY\n\nA clock ticks.\n")
        writer.flush()
        for _ in range(3):
            engine.intake.complete_drops()
            time.sleep(0.4)
        assert slow not in engine.intake.complete_drops(), "a file still open for writing was taken"
        writer.write("\nThe last line.\n")
    for name in ("draft.fountain.part", "draft.fountain.crdownload", "draft.fountain.tmp", "draft.fountain~"):
        (inbox / name).write_text("INT. ROOM - DAY\n\nHalf.\n")
    odd = os.fsdecode(b"sc\xe8ne-" + b"x" * 200 + b".fountain")  # not UTF-8, and 215 bytes long
    (inbox / odd).write_text("INT. ROOM - DAY\n\nA name from another system.\n")
    longest = "y" * (NAME_MAX_BYTES - len(".fountain")) + ".fountain"
    (inbox / longest).write_text("INT. ROOM - DAY\n\nA very long name.\n")
    (inbox / ("z" * 240 + ".fountain")).write_bytes((inbox / longest).read_bytes())  # a duplicate, long name too
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(engine.store.all()) < 3:
        engine.intake.take_drops()
        time.sleep(0.35)
    jobs = engine.store.all()
    assert len(jobs) == 3, [j.script_name for j in jobs]
    assert {j.script_name[:8] for j in jobs} == {"slow.fou", "sc_ne-xx", "yyyyyyyy"}
    assert "The last line." in (Path(jobs[0].work_folder) / "shotlist.json").read_text() or any(
        "last line" in (Path(j.work_folder) / "shotlist.json").read_text().lower() for j in jobs)
    assert all(len(p.name.encode()) <= NAME_MAX_BYTES for p in project.rglob("*"))
    notes = list((inbox / "done").glob("*.duplicate.txt"))
    assert len(notes) == 1 and "same content" in notes[0].read_text()
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == sorted(
        ["draft.fountain.part", "draft.fountain.crdownload", "draft.fountain.tmp", "draft.fountain~"])


def test_a_tampered_job_record_is_never_acted_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = _project(tmp_path / "studio")
    settings = load_settings(project / "nightshift.toml")
    engine = NightEngine(settings, renderer="animatic", respect_window=False, say=lambda _m: None)
    inbox = project / "inbox"
    job = engine.intake.claim(claim(inbox / SCRIPTS[0], inbox).path).job
    outside = tmp_path / "precious.txt"
    outside.write_text("not the studio's")
    path = engine.store.path(job.id)
    data = json.loads(path.read_text())
    data["claimed_path"] = str(outside)
    path.write_text(json.dumps(data))
    outcomes = engine.render_queue()
    assert outcomes == [] and outside.read_text() == "not the studio's" and not _deliveries(project)
    assert engine.work_job(job.id).status == "failed" and outside.exists()
    os.chdir(project)
    assert main(["queue", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert any(job.id in line and "outside" in line for line in listed["unreadable"])


def test_ids_titles_and_names_have_limits() -> None:
    with pytest.raises(ValueError, match="at most 16 characters|string_too_long|should match pattern"):
        Shot(id="s01-sh" + "1" * 300, scene=1, framing="wide", camera_move="static", action="x", duration_s=2)
    settings = Settings(project_dir=Path("."))
    assert settings.night.stable_s >= 5  # a safe default for slow writers


@pytest.mark.parametrize(("toml", "named"), [
    ('[night]\nwindow_start = "25:99"\n', "night.window_start"),
    ('[night]\nstable_s = -1\n', "night.stable_s"),
    ('[paths]\noutput = "/"\n', "paths.output"),
    ('[paths]\ninbox = "/etc"\n', "paths.inbox"),
])
def test_bad_config_is_refused_at_load_naming_the_setting_and_the_file(tmp_path: Path, toml: str, named: str,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nightshift.toml"
    config.write_text(toml)
    os.chdir(tmp_path)
    assert main(["queue"]) == 1
    err = capsys.readouterr().err
    assert str(config) in err and named.split(".")[-1] in err and "Traceback" not in err, err
    assert not list(Path("/").glob("plans")), "nothing was written to /"


def test_a_runaway_user_template_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    import nightshift.templating as templating

    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "shotlist.md.j2").write_text(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}")
    (folder / "keyframe.j2").write_text("{{ 'x' * 10**9 }}")
    (folder / "prompt_ltx.j2").write_text("{{ ''.__class__.__mro__ }}")
    original = templating.MAX_SECONDS
    templating.MAX_SECONDS = 1.0
    try:
        templates = TemplateSet(folder)
        for name, why in (("shotlist.md.j2", "ran for more than"), ("keyframe.j2", "items (at most"),
                          ("prompt_ltx.j2", "unsafe")):
            started = time.monotonic()
            with pytest.raises(NightshiftError) as caught:
                templates.render(name)
            assert time.monotonic() - started < 5
            assert str(folder / name) in str(caught.value) and why in str(caught.value)
            assert "\n" not in str(caught.value)
    finally:
        templating.MAX_SECONDS = original


def _wait_for(path: Path, text: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}: {path.read_text(errors='replace')[-2000:]}")


def test_ctrl_c_and_sigterm_stop_serve_the_same_way() -> None:
    with stop_on_signals(lambda message: None):
        assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM)
        assert callable(signal.getsignal(signal.SIGINT))


# Ctrl-C and SIGTERM reach one handler (cli_night.stop_on_signals, checked above), so each stage is stopped by one
# of them and the render stage, where a child process must die too, by both (the planning stage and SIGTERM at the
# render stage are marked slow, about 30 s each: .ci/run runs them after the default suite, to keep that within 15
# minutes).
@pytest.mark.parametrize(("stage", "fault", "wait_for", "how"), [
    pytest.param("planning", "plan-hang:1", "Flow run 'paper_boat.txt'", signal.SIGINT, marks=pytest.mark.slow),
    ("rendering", "render-hang:2", "s01-sh02 rendering", signal.SIGINT),
    pytest.param("rendering", "render-hang:2", "s01-sh02 rendering", signal.SIGTERM, marks=pytest.mark.slow),
    ("waiting", None, "serving", signal.SIGTERM),
])
def test_stop_within_ten_seconds_at_any_stage_and_lose_nothing(tmp_path: Path, prefect_api: str, stage: str,
                                                               fault: str | None, wait_for: str, how: int) -> None:
    project = _project(tmp_path / "studio")
    if stage == "waiting":
        for name in SCRIPTS:
            (project / "inbox" / name).unlink()
    log = project / "serve.log"
    env = _env(prefect_api, **({"NIGHTSHIFT_FAULT": fault} if fault else {}))
    command = [sys.executable, "-m", "nightshift.cli", "serve", "--now", "--renderer", "animatic"]
    serve = subprocess.Popen(command, cwd=project, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        _wait_for(log, wait_for, 120)
        time.sleep(0.5)
        sent = time.monotonic()
        serve.send_signal(how)
        code = serve.wait(timeout=15)
        took = time.monotonic() - sent
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
    assert took < 10, f"{stage}: still running {took:.1f} s after {signal.Signals(how).name}"
    assert code in (0, 130), log.read_text()[-2000:]
    time.sleep(1.5)  # the render child notices its parent is gone within a second
    assert not [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                if "nightshift.render_child" in line and str(project) in line]
    if stage != "waiting":  # nothing lost: a clean start finishes the night once, from where it stopped
        (project / "renders.log").write_text("")
        done = subprocess.run(serve_command(), cwd=project, env=_env(prefect_api), capture_output=True, text=True,
                              timeout=300)
        (project / "renders.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr[-2000:]
        assert not check_night(project), check_night(project)


def test_two_overnight_runs_at_once_deliver_each_job_once_and_end_completed(prefect_server: None,
                                                                            tmp_path: Path) -> None:
    """Two `overnight` runs started together (the UI's run form twice, or the schedule and a user): each job is
    rendered by one of them, the other says who has it; both runs end Completed and are named for the night."""
    import threading

    from prefect.client.orchestration import get_client

    from nightshift.flows.night import overnight

    project = _project(tmp_path / "studio")
    settings = load_settings(project / "nightshift.toml")
    engine = NightEngine(settings)
    for name in SCRIPTS:
        engine.intake.claim(claim(project / "inbox" / name, project / "inbox").path)
    states = []

    def night() -> None:
        states.append(overnight(str(project), str(project / "nightshift.toml"), "animatic", False, return_state=True))

    runs = [threading.Thread(target=night) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(600)
    assert [s.is_completed() for s in states] == [True, True], states
    names = Counter(read_manifest(p).inputs.script.name for p in _deliveries(project))
    assert names == Counter({s: 1 for s in SCRIPTS}), names
    empty = overnight(str(project), str(project / "nightshift.toml"), "animatic", False, return_state=True)
    assert empty.is_completed()
    with get_client(sync_client=True) as client:
        flow_names = {client.read_flow_run(s.state_details.flow_run_id).name for s in [*states, empty]}
    assert flow_names == {f"night of {time.strftime('%Y-%m-%d')} on {machine_name()}"}


@pytest.mark.slow  # about 26 s (eleven deliveries); .ci/run runs it after the default suite (pytest -m slow FILE)
def test_a_large_drop_does_not_hold_back_what_is_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10 scripts land at once behind a job already queued: the queued job is delivered while most of the drop
    still waits to be planned (intake runs a few seconds at a time, between jobs; here 0.2 s), then all of it is."""
    import nightshift.intake
    from nightshift.steps import Steps

    monkeypatch.setattr(nightshift.intake, "INTAKE_BUDGET_S", 0.2)
    project = _project(tmp_path / "studio")
    (project / "inbox" / SCRIPTS[1]).unlink()
    settings = load_settings(project / "nightshift.toml")
    said: list[str] = []
    engine = NightEngine(settings, renderer="animatic", respect_window=False, say=said.append)
    first = engine.intake.claim(claim(project / "inbox" / SCRIPTS[0], project / "inbox").path).job
    for n in range(10):
        (project / "inbox" / f"drop-{n:03d}.fountain").write_text(f"INT. ROOM {n} - DAY\n\nA lamp flickers {n} times.\n")
    (project / "inbox" / "copy.txt").write_bytes((CORPUS / SCRIPTS[0]).read_bytes())  # a duplicate: no planning
    seen_at_first_delivery: list[int] = []

    class Watch(Steps):
        def delivered(self, job, folder):  # noqa: ANN001, ANN202
            if job.id == first.id:
                seen_at_first_delivery.append(len(engine.store.all()))

    engine.steps = Watch()
    engine.serve(once=True)
    assert seen_at_first_delivery and seen_at_first_delivery[0] < 8, seen_at_first_delivery
    assert len([j for j in engine.store.all() if j.state == "delivered"]) == 11
    assert (project / "inbox" / "done" / "copy.txt.duplicate.txt").is_file()
