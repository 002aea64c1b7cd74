"""The wheel: one top-level package, templates as package data, `nightshift plan` from any folder."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_wheel_in_a_fresh_environment_plans_from_another_folder(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("nightshift_studio-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))} == {"nightshift"}
    assert "nightshift/templates/shotlist.md.j2" in names and "nightshift/agents/intake.py" in names

    # A fresh environment: its own interpreter prefix; the dependencies are this venv's (no network here),
    # reached through a .pth that adds the folder but not this checkout's editable install.
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    site = Path(subprocess.run([str(fresh / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install",
                                "--no-deps", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "idea.fountain").write_text("INT. KITCHEN - NIGHT\n\nA kettle boils over.\n")
    where = subprocess.run([str(fresh / "bin" / "python"), "-c", "import nightshift, nightshift.templating as t; "
                            "print(nightshift.__file__); print(t.BUILTIN_TEMPLATES)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout.split()
    assert all(str(site) in line for line in where), where  # the wheel's copy, not this checkout
    no_agents = subprocess.run([str(fresh / "bin" / "python"), "-c", "import agents"], cwd=elsewhere,
                               capture_output=True, text=True)
    assert no_agents.returncode != 0  # no top-level `agents` (or `flows`, `renderers`) to collide with
    plan = subprocess.run([str(fresh / "bin" / "nightshift"), "plan", "idea.fountain", "--planner", "rules"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert (elsewhere / "output" / "plans" / "idea" / "shotlist.md").is_file(), plan.stderr
