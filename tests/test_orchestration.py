"""The night: inbox claims, the durable queue, Prefect flows, delivery, kill-and-restart, one render per GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from nightshift.config import Settings
from nightshift.delivery import delivery_folder, read_manifest
from nightshift.inbox import StabilityTracker, claim, is_candidate, leftover_claims
from nightshift.engine import NightEngine
from nightshift.steps import Stop, in_window
from nightshift.flows.night import PrefectSteps
from nightshift.files import sha256_file
from nightshift.renderers.encode import probe

def _wait(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _deliveries(settings: Settings) -> list[Path]:
    root = settings.resolve(settings.paths.output)
    return sorted(p for p in root.glob("*/*") if (p / "manifest.json").is_file()) if root.is_dir() else []


def _rendered_clips(settings: Settings) -> list[dict]:
    """The clip records (renders.json) of the only job in the work folder, as far as it has got."""
    work = settings.project_dir / ".nightshift" / "work"
    files = list(work.glob("*/renders.json")) if work.is_dir() else []
    return json.loads(files[0].read_text())["clips"] if files else []


# --------------------------------------------------------------------------- plain functions


def test_window_wraps_midnight() -> None:
    at = lambda h, m=0: datetime(2026, 11, 21, h, m)  # noqa: E731
    assert in_window(at(1), "01:00", "07:00") and not in_window(at(7), "01:00", "07:00")
    assert in_window(at(23), "22:00", "06:00") and in_window(at(5, 59), "22:00", "06:00")
    assert not in_window(at(12), "22:00", "06:00")


def test_inbox_takes_only_complete_scripts(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in (".hidden.fountain", "draft.fountain.swp", "still.png", "notes~"):
        (inbox / name).write_text("x")
    (inbox / "folder.fountain").mkdir()
    (inbox / "link.fountain").symlink_to(tmp_path / "outside.txt")
    assert not any(is_candidate(p)[0] for p in inbox.iterdir())

    script = inbox / "growing.fountain"
    script.write_text("INT. ROOM - NIGHT\n\n")
    tracker = StabilityTracker(stable_s=1.0)
    assert not tracker.ready(script, now=0.0)
    with script.open("a") as handle:
        handle.write("More is being written.\n")
    assert not tracker.ready(script, now=0.9)  # it grew: the clock restarts
    assert not tracker.ready(script, now=1.5)
    assert tracker.ready(script, now=2.0)

    claimed = claim(script, inbox)
    assert claimed is not None and claimed.path.name == "growing.fountain" and not script.exists()
    assert claim(script, inbox) is None  # already gone: nobody else gets it
    assert leftover_claims(inbox) == [claimed.path]


def test_render_child_dies_with_its_parent() -> None:
    """A parent killed outright (SIGKILL, an escalated cancel) takes its render child along within seconds."""
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import os, time; from nightshift.render_child import "
        "exit_with_parent; exit_with_parent(os.getppid(), 0.2); print(\"watching\", flush=True); time.sleep(120)'], "
        "start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    said = [parent.stdout.readline().strip(), parent.stdout.readline().strip()]  # its pid, and the child's word
    assert "watching" in said, said  # the child is up (not an import error's zombie) and watching its parent
    child = int(next(word for word in said if word != "watching"))
    parent.kill()
    parent.wait()

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie waiting for init to reap it counts as gone
            return Path(f"/proc/{child}/stat").read_text().split(")")[1].split()[0] == "Z"
        except OSError:
            return True

    _wait(gone, 10, "the render child to exit after its parent was killed")


def test_second_delivery_same_day_gets_a_suffix(tmp_path: Path) -> None:
    night = datetime(2026, 11, 21, 1, 30)
    first = delivery_folder(tmp_path, night, "lighthouse")
    first.mkdir(parents=True)
    assert first == tmp_path / "2026-11-21" / "lighthouse"
    assert delivery_folder(tmp_path, night, "lighthouse").name == "lighthouse-2"


# --------------------------------------------------------------------------- through Prefect


def job_store(settings: Settings):  # noqa: ANN201 - the studio's JobStore
    return NightEngine(settings).store


def _engine(settings: Settings, now: bool = False, renderer: str | None = None, say=lambda _m: None,  # noqa: ANN001
            stop: Stop | None = None) -> NightEngine:
    """The engine as `nightshift serve` builds it: Prefect steps."""
    return NightEngine(settings, PrefectSteps(str(settings.project_dir), None), renderer, respect_window=not now,
                       stop=stop or Stop(), say=say)


def _serve(settings: Settings, **kwargs) -> tuple[threading.Thread, threading.Event, list[str]]:
    said: list[str] = []
    stop = Stop()
    engine = _engine(settings, say=said.append, stop=stop, **kwargs)
    thread = threading.Thread(target=engine.serve, daemon=True)
    thread.start()
    return thread, stop.event, said


def test_serve_delivers_dedupes_and_survives_bad_input(prefect_server: None, project: Settings, corpus: Path) -> None:
    inbox = project.resolve(project.paths.inbox)
    thread, stop, said = _serve(project, now=True, renderer="animatic")
    try:
        # A partial file is not taken while it is still being written.
        partial = inbox / "paper_boat.txt"
        text = (corpus / "paper_boat.txt").read_bytes()
        partial.write_bytes(text[: len(text) // 2])
        time.sleep(0.3)
        assert partial.exists(), "a file still being written was taken"
        partial.write_bytes(text)

        delivered = _wait(lambda: _deliveries(project), 240, "the first delivery")[0]
        (inbox / "empty.fountain").write_text("   \n")
        (inbox / "copy of paper_boat.txt").write_bytes(text)  # same content, other name
        _wait(lambda: (inbox / "failed" / "empty.fountain.error.txt").exists(), 60, "the failure report")
        _wait(lambda: (inbox / "done" / "copy of paper_boat.txt.duplicate.txt").exists(), 60, "the duplicate note")
        assert "empty" in (inbox / "failed" / "empty.fountain.error.txt").read_text().lower()
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(60)
    assert _deliveries(project) == [delivered]
    assert (inbox / "done" / "paper_boat.txt").is_file() and not list((inbox / ".claimed").iterdir())
    day = datetime.now().strftime("%Y-%m-%d")
    assert delivered.parent.name == day and delivered.name == "paper-boat"
    manifest = read_manifest(delivered)
    for entry in manifest.files:
        assert sha256_file(delivered / entry.path) == entry.sha256
    names = {e.path for e in manifest.files}
    assert {"shotlist.json", "renderplan.json", "paper-boat.mp4"} <= names
    for clip in manifest.clips:
        info = probe(delivered / clip.file)
        assert (info.width, info.height, info.frames) == (640, 360, clip.frames) and clip.animatic
    assert any("renderer animatic" in line or "delivered" in line for line in said)


def test_window_keeps_work_queued_until_it_opens(prefect_server: None, project: Settings, corpus: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    hour = datetime.now().hour
    closed = f"{(hour + 2) % 24:02d}:00", f"{(hour + 3) % 24:02d}:00"
    monkeypatch.setenv("NIGHTSHIFT_NIGHT__WINDOW_START", closed[0])
    monkeypatch.setenv("NIGHTSHIFT_NIGHT__WINDOW_END", closed[1])
    settings = Settings(project_dir=project.project_dir)
    (settings.resolve(settings.paths.inbox) / "paper_boat.txt").write_bytes((corpus / "paper_boat.txt").read_bytes())
    service = _engine(settings, renderer="animatic")
    _wait(lambda: service.intake.take_drops() or job_store(settings).pending(), 30, "the claim")
    assert not service.window_open() and service.render_queue() == []
    assert [j.state for j in job_store(settings).pending()] == ["queued"] and not _deliveries(settings)

    monkeypatch.setenv("NIGHTSHIFT_NIGHT__WINDOW_START", f"{hour:02d}:00")
    monkeypatch.setenv("NIGHTSHIFT_NIGHT__WINDOW_END", f"{(hour + 1) % 24:02d}:59")
    opened = _engine(Settings(project_dir=project.project_dir), renderer="animatic")
    assert opened.window_open() and len(opened.render_queue()) == 1
    assert not job_store(settings).pending() and len(_deliveries(settings)) == 1


def _artifacts(prefix: str) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=prefix)))
    return {a.type: json.loads(a.data) if a.type == "table" else a.data for a in found}


def test_served_deployment_renders_the_queue_and_shows_artifacts(prefect_server: None, project: Settings,
                                                                 corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`nightshift serve` with a server: the UI's run form starts the night, no work pool involved."""
    from prefect.deployments import run_deployment
    from prefect.settings import temporary_settings

    from nightshift.flows.serve import ServedDeployments

    hour = datetime.now().hour
    monkeypatch.setenv("NIGHTSHIFT_NIGHT__WINDOW_START", f"{(hour + 2) % 24:02d}:00")  # closed: the job waits
    monkeypatch.setenv("NIGHTSHIFT_NIGHT__WINDOW_END", f"{(hour + 3) % 24:02d}:00")
    settings = Settings(project_dir=project.project_dir)
    (settings.resolve(settings.paths.inbox) / "paper_boat.txt").write_bytes((corpus / "paper_boat.txt").read_bytes())
    watcher = _engine(settings)
    _wait(lambda: watcher.intake.take_drops() or job_store(settings).pending(), 30, "the claim")
    [job] = job_store(settings).pending()
    with temporary_settings(updates={"runner.poll_frequency": 1}):
        served = ServedDeployments(settings, None, "animatic")
        served.start()
        try:
            night = run_deployment("nightshift-overnight/overnight", parameters={"night_of": "test"}, timeout=300)
            assert night.state.is_completed(), night.state
            [delivered] = _deliveries(settings)
            # Started again from the UI, a delivered job is reported, not rendered or delivered twice.
            again = run_deployment("nightshift-render/render", parameters={"job_id": job.id, "title": "again"}, timeout=120)
            assert again.state.is_completed() and _deliveries(settings) == [delivered]
        finally:
            served.stop()
    assert night.deployment_id is not None and night.work_queue_name is None  # served: no work pool
    key = job.id.lower()
    artifacts = _artifacts(f"%{key}%")
    assert {row["shot"] for row in artifacts["table"]} == {c.shot_id for c in read_manifest(delivered).clips}
    assert str(delivered) in artifacts["markdown"] and artifacts["markdown"].count("data:image/jpeg;base64,") == 3


def test_two_scripts_never_render_on_one_gpu_at_once(prefect_server: None, project: Settings, corpus: Path) -> None:
    from nightshift.flows.night import intake, render
    from nightshift.inbox import claim as take

    inbox = project.resolve(project.paths.inbox)
    jobs = []
    for name in ("paper_boat.txt", "night_train.md"):
        (inbox / name).write_bytes((corpus / name).read_bytes())
        claimed = take(inbox / name, inbox)
        jobs.append(intake(str(claimed.path), name, str(project.project_dir))["job_id"])
    threads = [threading.Thread(target=render, args=(job_id, job_id, str(project.project_dir), None, "animatic"))
               for job_id in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    intervals = []
    for folder in _deliveries(project):
        intervals += [(datetime.fromisoformat(c.started), datetime.fromisoformat(c.finished)) for c in read_manifest(folder).clips]
    assert len(_deliveries(project)) == 2
    intervals.sort()
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert start >= end, "two shots rendered at the same time on one device"


@pytest.mark.slow  # about 35 s; .ci/run runs it after the default suite (the kill-point suite covers serve killed)
def test_killed_mid_night_resumes_without_rerendering(project: Settings, corpus: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "DO_NOT_TRACK": "1",
           "NIGHTSHIFT_RENDER__RENDERER": "animatic"}
    inbox = project.resolve(project.paths.inbox)
    (inbox / "paper_boat.txt").write_bytes((corpus / "paper_boat.txt").read_bytes())
    command = [sys.executable, "-m", "nightshift.cli", "serve", "--now", "--once"]
    first = subprocess.Popen(command, cwd=project.project_dir, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    try:
        _wait(lambda: len(_rendered_clips(project)) >= 2, 300, "two shots rendered before the kill")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # every Nightshift and Prefect process of that run
        first.wait()
    before = {c["shot_id"]: c for c in _rendered_clips(project)}
    assert list((inbox / ".claimed").rglob("paper_boat.txt")), "the claim must survive the crash"

    second = subprocess.run(command, cwd=project.project_dir, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    [delivered] = _deliveries(project)
    after = {c.shot_id: c for c in read_manifest(delivered).clips}
    # A record is written only after its clip is complete, so every shot recorded before the kill is kept.
    for shot_id, clip in before.items():
        assert after[shot_id].started == clip["started"], f"{shot_id} was rendered again"
    assert (inbox / "done" / "paper_boat.txt").is_file() and not list((inbox / ".claimed").rglob("*.txt"))
    assert not list(project.project_dir.glob("output/**/.*partial*"))


@pytest.mark.slow  # about 19 s; .ci/run runs it after the default suite (pytest -m slow FILE)
def test_run_delivers_with_the_tiny_diffusers_pipeline(prefect_server: None, project: Settings, corpus: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nightshift.flows.night import run_script
    from nightshift.inbox import claim as take
    from nightshift.renderers.tiny_models import build_ltx

    model = build_ltx(tmp_path / "tiny-ltx")
    for key, value in {"FAMILY": "ltx", "MODEL_ID": str(model), "WIDTH": "32", "HEIGHT": "32", "STEPS": "2",
                       "GUIDANCE": "1.0", "DEVICE": "cpu", "QUANTIZATION": "none"}.items():
        monkeypatch.setenv(f"NIGHTSHIFT_RENDER__{key}", value)
    inbox = project.resolve(project.paths.inbox)
    (inbox / "paper_boat.txt").write_bytes((corpus / "paper_boat.txt").read_bytes())
    claimed = take(inbox / "paper_boat.txt", inbox)
    folder = Path(run_script(str(claimed.path), "paper_boat.txt", str(project.project_dir), None, "diffusers"))
    manifest = read_manifest(folder)
    assert manifest.renderer.startswith("diffusers") and folder.parent.name == datetime.now().strftime("%Y-%m-%d")
    for clip in manifest.clips:
        assert not clip.animatic and clip.model_id == str(model) and clip.tier == "resident"
        assert clip.pipeline == "LTXConditionPipeline (text-to-video)"
        info = probe(folder / clip.file)
        assert (info.width, info.height, info.frames) == (640, 360, clip.frames)
    assert (inbox / "done" / "paper_boat.txt").is_file()


