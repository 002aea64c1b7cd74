"""`nightshift doctor`: what will run tonight on this machine, as a user runs it (a separate process, --json)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nightshift.config import load_settings
from nightshift.engine import NightEngine
from nightshift.inbox import claim
from tests.faults.test_kill_points import REPO

TOML = """[planner]\nkind = "rules"\n[render]\nfps = 8\nwidth = 128\nheight = 80\noutput_width = 320\noutput_height = 180\n"""


def _doctor(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSHIFT_")}
    return subprocess.run([sys.executable, "-m", "nightshift.cli", "doctor", *args], cwd=project,
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)


def test_doctor_reports_this_machine_and_a_tiny_render_per_family(tmp_path: Path) -> None:
    project = tmp_path / "studio"
    (project / "inbox").mkdir(parents=True)
    (project / "nightshift.toml").write_text(TOML)
    shutil.copyfile(REPO / "examples" / "corpus" / "paper_boat.txt", project / "inbox" / "paper_boat.txt")
    engine = NightEngine(load_settings(project / "nightshift.toml"))
    queued = engine.intake.claim(claim(project / "inbox" / "paper_boat.txt", project / "inbox").path)
    assert queued.status == "queued"  # tonight's queue: one job, planned, not rendered
    done = _doctor(project, "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    checks = {(c["section"], c["name"]): c for c in report["checks"]}
    assert report["ok"] and not report["blocking"]
    assert {c["section"] for c in report["checks"]} >= {"GPU", "Quantization", "Memory tiers", "Encoders", "Planner",
                                                        "Models", "Disk", "Tiny renders"}
    assert checks[("Encoders", "libx264")]["ok"]
    assert checks[("Quantization", "none")]["ok"] and checks[("Quantization", "fp8")]["ok"]
    assert checks[("Memory tiers", "available")]["data"]["tiers"][0] == "resident"
    for family in ("ltx", "ltx2", "wan", "hunyuan"):  # loaded from disk and rendered like a downloaded model
        tiny = checks[("Tiny renders", family)]
        assert tiny["ok"] and tiny["data"]["frames"] > 1 and tiny["data"]["seconds"] < 120, tiny
    assert checks[("Disk", str(project / "output"))]["data"]["free_gb"] > 0
    job = checks[("Queue", "Paper Boat")]
    assert job["ok"] and "3 shots left: animatic" in job["detail"], job


def test_doctor_exits_non_zero_saying_why_tonight_cannot_run(tmp_path: Path) -> None:
    project = tmp_path / "studio"
    project.mkdir()
    (project / "nightshift.toml").write_text('[planner]\nkind = "ollama"\nollama_host = "http://127.0.0.1:9"\n'
                                             '[render]\nquantization = "nf4"\n')
    done = _doctor(project, "--no-render")  # as a person reads it
    assert done.returncode == 1, done.stdout
    verdict = done.stdout.rstrip().splitlines()[-1]
    assert verdict.startswith("Tonight's queue cannot run here") and "Ollama" in verdict and "nf4" in verdict
    assert "-> start Ollama (`ollama serve`)" in done.stdout and "-> use int8 or fp8 on this machine" in done.stdout
