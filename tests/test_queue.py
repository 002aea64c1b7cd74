"""The render queue: arrival order, user priorities (set before or during the night), `nightshift queue`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nightshift.engine import NightEngine
from nightshift.steps import Steps
from nightshift.cli import main
from nightshift.config import Settings
from nightshift.delivery import read_manifest
from nightshift.errors import NightshiftError
from nightshift.inbox import claim
from nightshift.queue import find_job, format_queue, queue_entries, set_priority, waiting_scripts
from tests.faults.test_kill_points import REPO, drive

NAMES = ("paper_boat.txt", "night_train.md", "courier.fountain")
TOML = """[planner]\nkind = "rules"\n[render]\nfps = 4\nwidth = 64\nheight = 48\noutput_width = 64\noutput_height = 36\n"""


def _queued(tmp_path: Path) -> tuple[Settings, list[str]]:
    """Three scripts claimed and planned in the order of NAMES; returns their job ids in that order."""
    project = tmp_path / "project"
    (project / "inbox").mkdir(parents=True)
    (project / "nightshift.toml").write_text(TOML)
    settings = Settings(project_dir=project, planner={"kind": "rules"},
                        render={"fps": 4, "width": 64, "height": 48, "output_width": 64, "output_height": 36})
    inbox = project / "inbox"
    ids = []
    for name in NAMES:
        shutil.copyfile(REPO / "examples" / "corpus" / name, inbox / name)
        ids.append(NightEngine(settings).intake.claim(claim(inbox / name, inbox).path).job.id)
    return settings, ids


def test_arrival_order_then_priorities(tmp_path: Path) -> None:
    settings, ids = _queued(tmp_path)
    store = NightEngine(settings).store
    assert [j.id for j in store.pending()] == ids  # arrival order
    set_priority(settings, "courier.fountain", 5)  # by script name
    set_priority(settings, ids[1][:20], -1)  # by a unique start of the id: waits behind everything
    assert [j.id for j in store.pending()] == [ids[2], ids[0], ids[1]]
    entries = queue_entries(store)
    assert [(e.position, e.priority, e.shots_done) for e in entries] == [(1, 5, 0), (2, 0, 0), (3, -1, 0)]
    assert all(e.shots_total and e.shots_total > 0 for e in entries)
    set_priority(settings, "courier.fountain", 0)  # back to the default: arrival order again
    assert [j.id for j in store.pending()] == [ids[0], ids[2], ids[1]] and store.priorities() == {ids[1]: -1}

    stranded = settings.project_dir / "inbox" / ".claimed" / "20261122T010203.000001" / "stranded.fountain"
    stranded.parent.mkdir(parents=True)
    stranded.write_text("INT. ROOM - DAY\n\nPlanning stopped on a full disk.\n")
    assert waiting_scripts(settings) == [("stranded.fountain", "claimed, planning not finished (retried by serve, "
                                                               "e.g. after a full disk)")]
    broken = store.root / "20261122T000000-hand-edited.json"
    broken.write_text("{ not json")
    assert store.unreadable() == [broken] and len(store.pending()) == 3  # listed for the user, never fatal
    assert f"unreadable job file (not rendered until fixed or removed): {broken}" in format_queue(
        queue_entries(store), unreadable=store.unreadable())
    with pytest.raises(NightshiftError, match="no job matches 'nope.txt'"):
        find_job(store, "nope.txt")
    with pytest.raises(NightshiftError, match="matches 3 jobs"):
        find_job(store, "2")  # every id starts with the year


def test_the_night_renders_in_priority_order_and_a_priority_set_mid_night_counts(tmp_path: Path) -> None:
    settings, ids = _queued(tmp_path)
    set_priority(settings, "night_train.md", 3)
    order: list[str] = []

    class UserMidNight(Steps):
        def job(self, engine, job):  # noqa: ANN001, ANN202 - while the first job renders, the user moves the last up
            order.append(job.id)
            if len(order) == 1:
                set_priority(settings, "courier.fountain", 9)
            return super().job(engine, job)

    engine = NightEngine(settings, UserMidNight(), "animatic", respect_window=False)
    delivered = engine.render_queue()
    assert order == [ids[1], ids[2], ids[0]]
    assert [o.status for o in delivered] == ["delivered"] * 3 and engine.store.pending() == []
    with pytest.raises(NightshiftError, match="already delivered"):
        set_priority(settings, "courier.fountain", 1)


@pytest.mark.slow  # about 25 s (four scripts through serve); .ci/run runs it after the default suite
def test_queue_command_and_the_serving_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str], prefect_api: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    settings, ids = _queued(tmp_path)
    project = settings.project_dir
    monkeypatch.chdir(project)
    assert main(["queue", "--priority", "2", "courier.fountain", "Night Train"]) == 0  # by name and by title
    out = capsys.readouterr()
    assert "courier.fountain (job" in out.err and out.out.splitlines()[1].split()[:2] == ["1", "2"]
    (project / "inbox" / "late.fountain").write_text("INT. ROOM - DAY\n\nA late arrival.\n")
    assert main(["queue", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["job_id"] for e in listed["jobs"]] == [ids[1], ids[2], ids[0]]  # equal priority: arrival order
    assert listed["not_planned"] == [{"script_name": "late.fountain", "where": "in the inbox"}]
    assert listed["unreadable"] == []
    assert main(["queue", "--priority", "1"]) == 1 and "needs at least one JOB" in capsys.readouterr().err

    done = drive(project, prefect_api)  # `nightshift serve` renders the queue in that order
    assert done.returncode == 0, done.stderr[-2000:]
    deliveries = sorted(project.glob("output/*/*/manifest.json"), key=lambda p: read_manifest(p.parent).delivered)
    names = [read_manifest(p.parent).inputs.script.name for p in deliveries]
    assert names == [NAMES[1], NAMES[2], NAMES[0], "late.fountain"]  # late: planned by the loop, then rendered last
    assert main(["queue", "--all", "--json"]) == 0
    finished = json.loads(capsys.readouterr().out)["jobs"]
    assert {e["state"] for e in finished} == {"delivered"} and all(e["position"] is None for e in finished)
