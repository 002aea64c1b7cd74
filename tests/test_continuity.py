"""Continuity across a cut: a shot that continues the previous one starts on the frame that shot ended on, renders
after it, and renders again whenever it does. Tiny random-weight LTX-Video, loaded the way users' models are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nightshift.cli import main
from nightshift.config import Settings
from nightshift.planning_job import plan_script_file
from nightshift.plan_files import load_plan_folder
from nightshift.records import load_records, shots_not_done
from nightshift.files import sha256_file
from nightshift.renderers import tiny_models

SCENE = """Title: Continuity

INT. WORKSHOP - NIGHT

MARA lifts the lantern from its hook and turns toward the dark doorway at the back of the room. Mara walks \
slowly through the doorway into the long corridor, the light swinging across the damp stone walls and the old \
iron pipes. Mara stops at the end of the corridor where a door stands open onto the rain.

MARA
Who left this open?
"""


@pytest.fixture(scope="module")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_ltx(tmp_path_factory.mktemp("tiny") / "ltx")


def test_the_rules_planner_marks_an_action_carried_over_a_cut(tmp_path: Path) -> None:
    script = tmp_path / "continuity.fountain"
    script.write_text(SCENE)
    result = plan_script_file(script, Settings(project_dir=tmp_path, planner={"kind": "rules"}), out_dir=tmp_path / "p",
                              storyboard=False)
    action = [s for s in result.shotlist.shots if s.characters == ["MARA"] and not s.dialogue]
    assert len(action) >= 2 and not action[0].continues and all(s.continues for s in action[1:])
    establishing, dialogue = result.shotlist.shots[0], [s for s in result.shotlist.shots if s.dialogue]
    assert not establishing.continues and not any(s.continues for s in dialogue)
    specs = {s.shot_id: s for s in result.plan.specs}
    for shot in action[1:]:
        previous = result.shotlist.shots[[s.id for s in result.shotlist.shots].index(shot.id) - 1]
        assert specs[shot.id].keyframes[0].from_shot == previous.id


def test_a_continued_shot_starts_on_the_last_frame_and_renders_again_with_it(
        corpus: Path, tmp_path: Path, tiny_ltx: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in {"FAMILY": "ltx", "MODEL_ID": str(tiny_ltx), "WIDTH": "32", "HEIGHT": "32", "FPS": "8",
                       "STEPS": "2", "GUIDANCE": "1.0", "QUANTIZATION": "none", "OUTPUT_WIDTH": "64",
                       "OUTPUT_HEIGHT": "36"}.items():
        monkeypatch.setenv(f"NIGHTSHIFT_RENDER__{key}", value)
    plan = tmp_path / "plan"
    assert main(["plan", str(corpus / "paper_boat.txt"), "--planner", "rules", "--out", str(plan)]) == 0
    shotlist = json.loads((plan / "shotlist.json").read_text())
    first, second = shotlist["shots"][1]["id"], shotlist["shots"][2]["id"]
    shotlist["shots"][2]["continues"] = True  # the user says the action carries across this cut
    (plan / "shotlist.json").write_text(json.dumps(shotlist, indent=2))
    assert main(["plan", "--from-shotlist", str(plan / "shotlist.json")]) == 0
    _, renderplan = load_plan_folder(plan)
    assert next(s for s in renderplan.specs if s.shot_id == second).keyframes[0].from_shot == first

    render = ["render", str(plan), "--renderer", "diffusers", "--device", "cpu"]
    assert main([*render, "--shots", f"{first},{second}"]) == 0
    end = plan / "keyframes" / f"{first}-end.png"
    start = plan / "keyframes" / f"{second}-first.png"
    assert end.is_file() and start.is_file()
    # The continuing shot was conditioned on exactly the frame the shot before ended on.
    assert np.array_equal(np.asarray(Image.open(end)), np.asarray(Image.open(start)))
    record = load_records(plan)[second]
    assert record.continues_from == first and record.continues_frame_sha256 == sha256_file(end)
    assert any(f"continues {first}" in c for c in record.conditioning), record.conditioning

    # Rendering the first again renders the one continuing it, after it, and the record says why.
    capsys.readouterr()
    assert main([*render, "--shots", first]) == 0
    said = capsys.readouterr().err
    assert said.index(f"{first} rendering") < said.index(f"{second} rendering")
    again = load_records(plan)[second]
    assert any(f"because {first}, which it continues" in note for note in again.notes)
    assert again.continues_frame_sha256 == sha256_file(end)
    # A new end frame (a render killed after the first shot, before the second) makes the second not done.
    Image.new("RGB", (32, 32), (255, 0, 0)).save(end)
    assert second in [s.shot_id for s in shots_not_done(plan, renderplan.specs)]
