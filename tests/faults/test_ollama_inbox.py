"""A misbehaving Ollama, through the inbox: scripts dropped while the planner server answers garbage, too
slowly, with 0 or 10,000 shots, server errors or a dropped connection, then while it is down, then with
`planner.on_failure = "fail"`. `nightshift serve --now --once` (a child process) plans them with
the real `ollama` client against the protocol double (tests/ollama_double.py). Each script must end
delivered (repaired, or planned by the rules planner with the reason written down) or in inbox/failed/
with a report naming the problem; the loop keeps serving to the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nightshift.delivery import read_manifest
from tests.faults.test_kill_points import drive
from tests.ollama_double import OllamaDouble, default_answer

RENDER = "[render]\nfps = 4\nwidth = 64\nheight = 48\noutput_width = 64\noutput_height = 36\n[night]\nstable_s = 0\n"
CASES = ("GOOD", "GARBAGEONCE", "GARBAGE", "ZEROSHOTS", "HUGE", "SLOW", "DROP", "ERRORS")


def _misbehave(request: dict, n: int) -> object:
    """The answer depends on the marker word in the scene text, so one server misbehaves per script."""
    text = next(m["content"] for m in request["messages"] if m["role"] == "user")
    marker = next((c for c in CASES if f" {c} " in text), "GOOD")
    repairs = len(request["messages"]) > 2
    if marker == "GARBAGEONCE":
        return default_answer(request) if repairs else "{not json at all"
    if marker == "GARBAGE":
        return "Sure! Here are your shots: {{{"
    if marker == "ZEROSHOTS":
        return json.dumps({"shots": []})
    if marker == "HUGE":
        shot = json.loads(default_answer(request))["shots"][0]
        return json.dumps({"shots": [shot] * 10_000})
    if marker == "SLOW":
        time.sleep(3)  # past planner.timeout_s
    if marker == "DROP":
        return "DROP"
    if marker == "ERRORS":
        return (500, "llama runner process has terminated")
    return default_answer(request)


def _script(marker: str, take: int = 1) -> str:
    return f"Title: Case {marker} take {take}\n\nINT. ROOM - NIGHT\n\nThe {marker} lamp flickers and goes out.\n\n"


def _configure(project: Path, host: str, on_failure: str = "fallback") -> None:
    (project / "nightshift.toml").write_text(
        f'[planner]\nkind = "auto"\nollama_host = "{host}"\ntimeout_s = 1.5\nmax_repairs = 1\n'
        f'on_failure = "{on_failure}"\n{RENDER}')


def _delivered(project: Path) -> dict[str, dict]:
    """Script name -> its delivered shot list (as JSON)."""
    return {read_manifest(p.parent).inputs.script.name: json.loads((p.parent / "shotlist.json").read_text())
            for p in project.glob("output/*/*/manifest.json")}


@pytest.mark.slow  # about a minute; .ci/run runs it after the default suite (pytest -m slow FILE)
def test_misbehaving_ollama_through_the_inbox(tmp_path: Path, prefect_api: str) -> None:
    project = tmp_path / "project"
    inbox = project / "inbox"
    inbox.mkdir(parents=True)
    double = OllamaDouble(behaviour=_misbehave).start()
    try:
        _configure(project, double.url)
        for marker in CASES:
            (inbox / f"{marker.lower()}.fountain").write_text(_script(marker))
        first = drive(project, prefect_api, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
    finally:
        double.stop()
    plans = _delivered(project)
    assert sorted(plans) == sorted(f"{m.lower()}.fountain" for m in CASES)  # every one delivered, once

    def planned_by(name: str) -> set[str]:
        return {shot["planned_by"] for shot in plans[name]["shots"]}

    for name in ("good.fountain", "garbageonce.fountain"):  # answered well, or repaired after one bad answer
        assert plans[name]["planner"]["kind"] == "ollama" and not plans[name]["warnings"], plans[name]["warnings"]
        assert planned_by(name) == {"ollama:qwen3:4b"}
    why = {"garbage.fountain": "Invalid JSON", "zeroshots.fountain": "at least 1 item",
           "huge.fountain": "10000 shots is more than 24", "slow.fountain": "took longer than 1.5s",
           "drop.fountain": "the connection to Ollama broke", "errors.fountain": "Ollama answered 500"}
    for name, reason in why.items():  # planned by the rules planner, the reason written into the plan
        warnings = " ".join(plans[name]["warnings"])
        assert "planned with the rules planner instead" in warnings and reason in warnings, (name, warnings)
        assert planned_by(name) == {"rules (fallback)"}, name
    assert len(plans["huge.fountain"]["shots"]) < 100

    # Ollama down (the double stopped): planned by the rules planner, with a note saying so.
    (inbox / "down.fountain").write_text(_script("DOWN"))
    second = drive(project, prefect_api, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    down = _delivered(project)["down.fountain"]
    assert down["planner"]["kind"] == "rules" and "not reachable" in down["planner"]["notes"][0]

    # on_failure = "fail": a script Ollama cannot plan goes to inbox/failed/ with a report; the next is delivered.
    double = OllamaDouble(behaviour=_misbehave).start()
    try:
        _configure(project, double.url, on_failure="fail")
        (inbox / "garbage-strict.fountain").write_text(_script("GARBAGE", take=2))  # not a duplicate
        (inbox / "good-after.fountain").write_text(_script("GOOD", take=2))
        third = drive(project, prefect_api, timeout=300)
        assert third.returncode == 0, third.stderr[-3000:]
    finally:
        double.stop()
    report = (inbox / "failed" / "garbage-strict.fountain.error.txt").read_text()
    assert "garbage-strict.fountain" in report and "no usable answer" in report, report
    assert (inbox / "failed" / "garbage-strict.fountain").is_file()
    assert "good-after.fountain" in _delivered(project)
    assert sorted(p.name for p in (inbox / "done").iterdir()) == sorted(
        [f"{m.lower()}.fountain" for m in CASES] + ["down.fountain", "good-after.fountain"])
