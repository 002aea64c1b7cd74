"""Outages in a real night through Prefect: CUDA out of memory at every tier for one script, and the
Prefect server killed alone (a separate `prefect server start`) while `nightshift serve` runs against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nightshift.config import Settings
from nightshift.delivery import read_manifest
from nightshift.inbox import claim
from nightshift.verify import verify_delivery
from nightshift.engine import NightEngine
from tests.prefect_server import free_port, start_prefect_server
from tests.test_orchestration import _deliveries, _engine, _rendered_clips, _wait


@pytest.mark.slow  # about 40 s; .ci/run runs it after the default suite (pytest -m slow FILE)
def test_out_of_memory_at_every_tier_fails_that_script_and_the_night_goes_on(
        prefect_server: None, project: Settings, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA out of memory at every tier (a failpoint in the first job's render child raises torch's OOM error at
    each pipeline call): that script fails with a report naming each tier tried; the next one is delivered."""
    import nightshift.shot_loop
    from nightshift.render_worker import RenderWorker
    from nightshift.renderers.tiny_models import build_ltx

    model = build_ltx(tmp_path / "tiny-ltx")
    for key, value in {"FAMILY": "ltx", "MODEL_ID": str(model), "WIDTH": "32", "HEIGHT": "32", "STEPS": "2",
                       "GUIDANCE": "1.0", "DEVICE": "cpu", "QUANTIZATION": "none"}.items():
        monkeypatch.setenv(f"NIGHTSHIFT_RENDER__{key}", value)
    settings = Settings(project_dir=project.project_dir)
    inbox = settings.resolve(settings.paths.inbox)
    jobs = []
    for name in ("paper_boat.txt", "night_train.md"):
        (inbox / name).write_bytes((corpus / name).read_bytes())
        jobs.append(NightEngine(settings).intake.claim(claim(inbox / name, inbox).path).job)
    children: list[RenderWorker] = []

    class FirstJobOutOfMemory(RenderWorker):  # one render child per job: only the first job's child runs out
        def __init__(self, env: dict[str, str] | None = None) -> None:
            super().__init__(env if children else {**os.environ, "NIGHTSHIFT_FAULT": "generate-oom:1"})
            children.append(self)

    monkeypatch.setattr(nightshift.shot_loop, "RenderWorker", FirstJobOutOfMemory)
    said: list[str] = []
    delivered = [o.delivery for o in _engine(settings, now=True, renderer="diffusers", say=said.append).render_queue()
                 if o.status == "delivered"]

    failed = NightEngine(settings).store.load(jobs[0].id)
    assert failed.state == "failed" and "out of memory at every tier tried" in (failed.error or "")
    report = (inbox / "failed" / "paper_boat.txt.error.txt").read_text()
    for tier in ("resident", "resident_tiled", "group_offload"):
        assert f"none/{tier}: out of memory" in report, report
    assert "lower the resolution" in report and any("paper_boat.txt: failed" in line for line in said)
    [folder] = delivered
    assert read_manifest(Path(folder)).inputs.script.name == "night_train.md"
    # A render child per pass: the first job's drafts (out of memory), the second's drafts, then its finals.
    assert (inbox / "done" / "night_train.md").is_file() and len(children) == 3

@pytest.mark.slow  # about 40 s; .ci/run runs it after the default suite (pytest -m slow FILE)
def test_prefect_server_killed_alone_mid_night(project: Settings, corpus: Path, tmp_path: Path) -> None:
    """The Prefect server (a separate `prefect server start`) is SIGKILLed mid-render and restarted on the same
    database while `nightshift serve` keeps running: serve never exits, the night finishes once the server is
    back, the script is delivered once, and no finished shot is rendered again. Prefect's client retries a lost
    server for about a minute by itself (2+4+8+16+32 s); one retry here makes the outage outlast them, so the
    render flow crashes and serve's own keep-queued-and-back-off path is what brings the night home."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "DO_NOT_TRACK": "1",
           "PREFECT_CLIENT_MAX_RETRIES": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "NIGHTSHIFT_RENDER__RENDERER": "animatic"}
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = start_prefect_server(port, env, server_log)
    inbox = project.resolve(project.paths.inbox)
    (inbox / "lighthouse.fountain").write_bytes((corpus / "lighthouse.fountain").read_bytes())
    serve = subprocess.Popen([sys.executable, "-m", "nightshift.cli", "serve", "--now"], cwd=project.project_dir,
                             env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=open(serve_log, "w"))

    try:
        _wait(lambda: len(_rendered_clips(project)) >= 2, 300, "two shots rendered before the server is killed")
        os.killpg(server.pid, signal.SIGKILL)  # the server alone; serve and its render child keep running
        server.wait()
        before = {c["shot_id"]: c for c in _rendered_clips(project)}
        time.sleep(8)  # down long enough for serve to notice and back off
        assert serve.poll() is None, "nightshift serve exited when the server went away"
        server = start_prefect_server(port, env, server_log)  # same port, same database
        _wait(lambda: "lighthouse.fountain: delivered to" in serve_log.read_text(), 600,
              "the delivery after the server came back")
        [delivered] = _deliveries(project)
        assert serve.poll() is None, serve_log.read_text()[-3000:]
        serve.send_signal(signal.SIGINT)  # Ctrl-C: serve stops promptly and cleanly
        assert serve.wait(60) == 0
    finally:
        for process in (serve, server):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(60)
    said = serve_log.read_text()
    assert "it stays queued, next try in" in said, said[-3000:]
    after = {c.shot_id: c for c in read_manifest(delivered).clips}
    for shot_id, clip in before.items():
        assert after[shot_id].started == clip["started"], f"{shot_id} was rendered again"
    assert verify_delivery(delivered).ok
    assert (inbox / "done" / "lighthouse.fountain").is_file() and not list((inbox / ".claimed").rglob("*.fountain"))
    assert [j.state for j in NightEngine(project).store.all()] == ["delivered"]
