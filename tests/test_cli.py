"""The `nightshift` CLI end to end, as a user runs it (a real subprocess for the main paths)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from nightshift.cli import main
from nightshift.plan_files import RENDERPLAN_SCHEMA, SHOTLIST_SCHEMA
from tests.conftest import CORPUS_FILES
from tests.ollama_double import OllamaDouble


def _validate_folder(folder: Path) -> tuple[dict, dict]:
    shotlist = json.loads((folder / "shotlist.json").read_text())
    plan = json.loads((folder / "renderplan.json").read_text())
    jsonschema.validate(shotlist, json.loads((folder / SHOTLIST_SCHEMA).read_text()))
    jsonschema.validate(plan, json.loads((folder / RENDERPLAN_SCHEMA).read_text()))
    assert shotlist["$schema"] == f"./{SHOTLIST_SCHEMA}"
    assert (folder / "shotlist.md").read_text().startswith("# ")
    assert [s["shot_id"] for s in plan["specs"]] == [s["id"] for s in shotlist["shots"]]
    return shotlist, plan


def test_init_creates_a_project_and_never_overwrites(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path / "studio")]) == 0
    config = tmp_path / "studio" / "nightshift.toml"
    assert (tmp_path / "studio" / "inbox").is_dir() and (tmp_path / "studio" / "output").is_dir()
    assert '# model = "qwen3:4b"' in config.read_text()
    config.write_text('[planner]\nkind = "rules"\n')
    assert main(["init", str(tmp_path / "studio")]) == 0
    assert config.read_text() == '[planner]\nkind = "rules"\n'


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_plan_each_corpus_file_with_rules(corpus: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "plan"
    assert main(["plan", str(corpus / name), "--planner", "rules", "--out", str(out)]) == 0
    shotlist, plan = _validate_folder(out)
    assert shotlist["planner"]["kind"] == "rules" and plan["family"] == "ltx"


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_plan_each_corpus_file_with_ollama_host(corpus: Path, tmp_path: Path, name: str,
                                                ollama_double: OllamaDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_double.url)
    out = tmp_path / "plan"
    assert main(["plan", str(corpus / name), "--out", str(out)]) == 0
    shotlist, _ = _validate_folder(out)
    assert shotlist["planner"]["kind"] == "ollama"
    assert all(s["planned_by"] == "ollama:qwen3:4b" for s in shotlist["shots"])


def test_edit_shotlist_and_rebuild_render_plan(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan"
    assert main(["plan", str(corpus / "lighthouse.fountain"), "--planner", "rules", "--out", str(out)]) == 0
    shotlist_path = out / "shotlist.json"
    before = json.loads((out / "renderplan.json").read_text())
    data = json.loads(shotlist_path.read_text())
    data["shots"][2]["duration_s"] = 3.0
    data["shots"][2]["action"] = "Mara stops and listens to the storm."
    shotlist_path.write_text(json.dumps(data, indent=2))
    assert main(["plan", "--from-shotlist", str(shotlist_path)]) == 0
    after = json.loads((out / "renderplan.json").read_text())
    changed = [a["shot_id"] for a, b in zip(after["specs"], before["specs"]) if a != b]
    assert changed == [data["shots"][2]["id"]]
    assert after["shotlist_sha256"] != before["shotlist_sha256"]
    assert "Mara stops and listens" in (out / "shotlist.md").read_text()
    assert json.loads(shotlist_path.read_text()) == data  # the user's file is never rewritten


def test_bad_shotlist_edit_names_the_file_and_field(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "plan"
    main(["plan", str(corpus / "paper_boat.txt"), "--planner", "rules", "--out", str(out)])
    data = json.loads((out / "shotlist.json").read_text())
    data["shots"][0]["framing"] = "super wide"
    data["shots"][0]["duraton_s"] = 3
    (out / "shotlist.json").write_text(json.dumps(data))
    assert main(["plan", "--from-shotlist", str(out / "shotlist.json")]) == 1
    err = capsys.readouterr().err
    assert "shotlist.json" in err and "shots.0.framing" in err and "shots.0.duraton_s" in err
    (out / "shotlist.json").write_text("{ broken")
    assert main(["plan", "--from-shotlist", str(out / "shotlist.json")]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_family_switch_and_env_config(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTSHIFT_RENDER__FPS", "16")
    out = tmp_path / "plan"
    assert main(["plan", str(corpus / "night_train.md"), "--planner", "rules", "--family", "wan", "--out", str(out)]) == 0
    _, plan = _validate_folder(out)
    assert plan["family"] == "wan" and all(s["fps"] == 16 and (s["num_frames"] - 1) % 4 == 0 for s in plan["specs"])


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"\x00\x01\x02" * 100, "binary")],
)
def test_bad_script_exits_1_with_a_clear_message(tmp_path: Path, content: bytes, message: str) -> None:
    script = tmp_path / "bad script.fountain"
    script.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "nightshift.cli", "plan", str(script)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "bad script.fountain" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_with_config_file(corpus: Path, tmp_path: Path) -> None:
    """The installed `nightshift` entry point, with settings from nightshift.toml in the project folder."""
    (tmp_path / "nightshift.toml").write_text('[planner]\nkind = "rules"\n[render]\nfamily = "hunyuan"\n')
    exe = Path(sys.executable).parent / "nightshift"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSHIFT_")}
    result = subprocess.run([str(exe), "plan", str(corpus / "courier.fountain")],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip())
    assert folder == tmp_path / "output" / "plans" / "the-courier"
    _, plan = _validate_folder(folder)
    assert plan["family"] == "hunyuan"
    assert "rules planner chosen" in result.stderr and " shots, " in result.stderr
