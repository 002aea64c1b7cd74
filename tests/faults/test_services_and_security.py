"""A render that hangs, a night that must go on after a failed script, and the security defaults."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nightshift.engine import NightEngine
from nightshift.shot_loop import render_request
from nightshift.steps import Steps
from nightshift.config import Settings
from nightshift.errors import DiskFull, ShotFailed
from nightshift.records import shots_not_done
from nightshift.render_worker import RenderWorker, render_with_retries
from nightshift.plan_files import load_plan_folder
from nightshift.renderers.shots import RendererChoice
from tests.faults.test_kill_points import REPO, SCRIPTS, _project, drive

FAST = {"fps": 4, "width": 64, "height": 48, "output_width": 64, "output_height": 36}


def _queued_job(tmp_path: Path):  # noqa: ANN202 - (settings, job)
    from nightshift.inbox import claim

    project = _project(tmp_path / "project")
    settings = Settings(project_dir=project, planner={"kind": "rules"}, render=FAST)
    inbox = project / "inbox"
    outcome = NightEngine(settings).intake.claim(claim(inbox / SCRIPTS[0], inbox).path)
    return settings, outcome.job


def _first_shot(tmp_path: Path):  # noqa: ANN202 - (settings, job, shot id, render request)
    settings, job = _queued_job(tmp_path)
    folder = Path(job.work_folder)
    shot = shots_not_done(folder, load_plan_folder(folder)[1].specs)[0].shot_id
    return settings, job, shot, render_request(folder, folder, shot, RendererChoice("animatic", "cpu", "test"), settings)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"


def test_hung_render_is_killed_retried_then_reported(tmp_path: Path) -> None:
    _, _, shot, request = _first_shot(tmp_path)
    worker = RenderWorker(env={**os.environ, "NIGHTSHIFT_FAULT": "render-hang:1", "PYTHONPATH": str(REPO)})
    seen: list[int] = []
    original = worker._start

    def start(shot_id: str):  # noqa: ANN202 - remember every child started, to check each one was killed
        process = original(shot_id)
        if not seen or seen[-1] != process.pid:
            seen.append(process.pid)
        return process

    worker._start = start  # type: ignore[method-assign]
    warnings: list[str] = []
    with pytest.raises(ShotFailed) as caught:
        render_with_retries(worker, request, timeout_s=4, retries=1, warn=warnings.append)
    worker.close()
    assert f"{shot}: failed 2 times" in str(caught.value) and "no result after 4 s" in str(caught.value)
    assert len(warnings) == 2 and len(seen) == 2 and not any(_alive(pid) for pid in seen)

    # Without the fault the same request renders: the next attempt gets a fresh child.
    fresh = RenderWorker(env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert render_with_retries(fresh, request, timeout_s=120, retries=0).shot_id == shot
    finally:
        fresh.close()


def test_a_failed_script_does_not_stop_the_night(tmp_path: Path) -> None:
    """One job that cannot render fails with a report; the next job in the queue is still delivered."""
    from nightshift.inbox import claim

    settings, broken = _queued_job(tmp_path)
    inbox = settings.resolve(settings.paths.inbox)
    engine = NightEngine(settings, renderer="animatic", respect_window=False)
    second = engine.intake.claim(claim(inbox / SCRIPTS[1], inbox).path).job
    (Path(broken.work_folder) / "renderplan.json").write_text("{ not json")  # a damaged plan
    outcomes = engine.render_queue()
    failed = [o.job_id for o in outcomes if o.status == "failed"]
    delivered = [o.delivery for o in outcomes if o.status == "delivered"]
    assert failed == [broken.id] and len(delivered) == 1 and second is not None
    report = (inbox / "failed" / f"{SCRIPTS[0]}.error.txt").read_text()
    assert "renderplan.json" in report and "drop it into the inbox again" in report


def test_defaults_stay_on_this_machine() -> None:
    settings = Settings(project_dir=Path("."))
    assert settings.planner.ollama_host.startswith("http://127.0.0.1:")
    assert settings.signing.tsa_url is None  # no time-stamp server is contacted unless the user sets one


@pytest.mark.slow  # about 16 s (a whole night through serve); .ci/run runs it after the default suite
def test_folders_follow_the_umask_and_keys_stay_private(tmp_path: Path, prefect_api: str) -> None:
    project = _project(tmp_path / "project")
    done = drive(project, prefect_api, preexec_fn=lambda: os.umask(0o027))
    assert done.returncode == 0, done.stderr[-2000:]
    made = [p for p in project.rglob("*") if ".nightshift/signing" not in p.as_posix() and "inbox" not in p.parts
            and p.name not in ("nightshift.toml", "renders.log")]  # the test wrote those
    assert made and all(stat.S_IMODE(p.stat().st_mode) & 0o007 == 0 for p in made), \
        [oct(stat.S_IMODE(p.stat().st_mode)) + " " + str(p) for p in made if stat.S_IMODE(p.stat().st_mode) & 0o007][:5]
    keys = list((project / ".nightshift" / "signing").glob("*.key"))
    assert len(keys) == 2 and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    key_text = "".join(k.read_text() for k in keys).split("-----")[2].strip()[:40]
    for path in [p for p in project.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".txt", ".log")]:
        text = path.read_text(errors="replace")
        assert "PRIVATE KEY" not in text and key_text not in text, path
    assert "PRIVATE KEY" not in done.stdout + done.stderr


def test_disk_full_during_encode_keeps_the_script_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC mid-encode: a clear error, the half-written clip removed, the job still queued; once space is back
    the same job finishes."""

    settings, job = _queued_job(tmp_path)
    monkeypatch.setenv("NIGHTSHIFT_FAULT", "encode-enospc:40")  # in the second shot's frames
    engine = NightEngine(settings, renderer="animatic", respect_window=False)
    with pytest.raises(DiskFull) as caught:
        engine.work_job(job.id)
    assert "No space left on device" in str(caught.value)
    work = Path(job.work_folder)
    assert not list(work.rglob(".*partial*")), "a half-written clip was left behind"
    assert [j.id for j in engine.store.pending()] == [job.id]
    monkeypatch.delenv("NIGHTSHIFT_FAULT")
    outcome = engine.work_job(job.id)
    assert outcome.status == "delivered" and Path(outcome.delivery).is_dir()


def test_disk_full_in_the_render_child_is_not_retried_or_failed(tmp_path: Path) -> None:
    settings, job, _, request = _first_shot(tmp_path)
    worker = RenderWorker(env={**os.environ, "NIGHTSHIFT_FAULT": "upscale-enospc:3", "PYTHONPATH": str(REPO)})
    warnings: list[str] = []
    try:
        with pytest.raises(DiskFull) as caught:
            render_with_retries(worker, request, timeout_s=120, retries=3, warn=warnings.append)
    finally:
        worker.close()
    assert "No space left on device" in str(caught.value) and "stays queued" in caught.value.report()
    assert warnings == []  # not retried
    assert not list(Path(job.work_folder).rglob(".*partial*"))
    assert NightEngine(settings).store.load(job.id).state == "queued"


def test_a_crashing_render_is_retried_later_never_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error (say the Prefect server restarting) keeps the job queued, retried with a growing wait."""
    settings, job = _queued_job(tmp_path)
    calls: list[str] = []

    class ServerGone(Steps):
        def job(self, engine, job):  # noqa: ANN001, ANN202 - the render flow run cannot be created
            calls.append(job.id)
            raise ConnectionError("the Prefect server went away")

    said: list[str] = []
    service = NightEngine(settings, ServerGone(), respect_window=False, say=said.append)
    assert service.render_queue() == [] and service.render_queue() == []  # the second call is inside the wait
    assert calls == [job.id] and "next try in 2 s" in said[0]
    service.retry_at[job.id] = 0.0  # the wait is over
    service.render_queue()
    assert calls == [job.id, job.id] and "next try in 4 s" in said[-1]
    assert [j.id for j in service.store.pending()] == [job.id]  # still queued, nothing failed
