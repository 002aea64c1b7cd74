"""Characters across shots: reference images and LoRAs from the shot list's `character_looks`, used per family
where diffusers supports them and recorded (each file's sha256, each adapter's weight). Tiny random-weight
pipelines and a tiny LoRA made here, loaded the way users' files are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nightshift.cli import main
from nightshift.files import sha256_file
from nightshift.plan_files import load_plan_folder
from nightshift.records import load_records
from nightshift.renderers import tiny_models
from tests import tiny_models as test_models
from nightshift.renderers.looks import resolve_look
from nightshift.renderers.video import BackendOptions, backend_class
from nightshift.schemas import RenderSpec
from tests.test_continuity import SCENE


def _tiny_lora(path: Path, model: Path) -> Path:
    """A rank-2 LoRA on the tiny LTX transformer's first attention projections, in diffusers' PEFT key format."""
    config = json.loads((model / "transformer" / "config.json").read_text())
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    torch.manual_seed(3)
    state = {}
    for projection in ("to_q", "to_k", "to_v"):
        state[f"transformer.transformer_blocks.0.attn1.{projection}.lora_A.weight"] = torch.randn(2, inner)
        state[f"transformer.transformer_blocks.0.attn1.{projection}.lora_B.weight"] = torch.randn(inner, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def test_a_characters_reference_and_lora_reach_the_shots_they_are_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_models.build_ltx(tmp_path / "ltx")
    for key, value in {"FAMILY": "ltx", "MODEL_ID": str(model), "WIDTH": "32", "HEIGHT": "32", "FPS": "8",
                       "STEPS": "2", "GUIDANCE": "1.0", "QUANTIZATION": "none", "OUTPUT_WIDTH": "64",
                       "OUTPUT_HEIGHT": "36"}.items():
        monkeypatch.setenv(f"NIGHTSHIFT_RENDER__{key}", value)
    script = tmp_path / "continuity.fountain"
    script.write_text(SCENE)
    plan = tmp_path / "plan"
    assert main(["plan", str(script), "--planner", "rules", "--out", str(plan)]) == 0
    (plan / "looks").mkdir()
    Image.new("RGB", (48, 48), (180, 40, 40)).save(plan / "looks" / "mara.png")
    lora = _tiny_lora(plan / "looks" / "mara.safetensors", model)
    shotlist = json.loads((plan / "shotlist.json").read_text())
    shotlist["character_looks"] = {"MARA": {"images": ["looks/mara.png"],
                                            "lora": {"path": "looks/mara.safetensors", "trigger": "mara_person",
                                                     "weight": 0.8}}}
    (plan / "shotlist.json").write_text(json.dumps(shotlist, indent=2))
    assert main(["plan", "--from-shotlist", str(plan / "shotlist.json")]) == 0
    shotlist_model, renderplan = load_plan_folder(plan)
    with_mara = next(s for s in shotlist_model.shots if s.characters == ["MARA"])
    without = shotlist_model.shots[0]  # the establishing shot: nobody in frame
    specs = {s.shot_id: s for s in renderplan.specs}
    assert specs[with_mara.id].references == ["looks/mara.png"] and specs[with_mara.id].prompt.startswith("mara_person, ")
    assert [(l.path, l.weight) for l in specs[with_mara.id].loras] == [("looks/mara.safetensors", 0.8)]
    assert not specs[without.id].references and not specs[without.id].loras

    assert main(["render", str(plan), "--renderer", "diffusers", "--device", "cpu",
                 "--shots", f"{without.id},{with_mara.id}"]) == 0
    records = load_records(plan)
    look = records[with_mara.id].look
    assert look["references"] == [{"path": "looks/mara.png", "sha256": sha256_file(plan / "looks" / "mara.png")}]
    assert look["loras"] == [{"name": "look_mara", "path": "looks/mara.safetensors", "sha256": sha256_file(lora),
                              "weight": 0.8}]
    assert any(c.startswith("reference@0") for c in records[with_mara.id].conditioning)
    assert records[without.id].look == {}  # rendered after or before, its shot carries no one's look

    # The LoRA changes what the model makes, at the recorded weight; switched off for a shot without the character.
    backend = backend_class("ltx")(str(model), BackendOptions(quantization="none"))
    spec = specs[with_mara.id]
    plain = backend.render(spec.model_copy(update={"loras": [], "references": []}), []).output.frames
    styled = backend.render(spec.model_copy(update={"references": []}), [], resolve_look(
        spec.model_copy(update={"references": []}), plan)).output.frames
    again = backend.render(spec.model_copy(update={"loras": [], "references": []}), []).output.frames
    assert not np.array_equal(plain, styled) and np.array_equal(plain, again)
    assert backend.adapters == {"look_mara"}


def test_wan_vace_takes_the_characters_reference_images(tmp_path: Path) -> None:
    model = test_models.build_wan_vace(tmp_path / "vace")
    (tmp_path / "looks").mkdir()
    Image.new("RGB", (40, 40), (30, 160, 60)).save(tmp_path / "looks" / "ada.png")
    spec = RenderSpec(shot_id="s01-sh01", family="wan", model_id=str(model), prompt="a woman walks", seed=1,
                      width=32, height=32, fps=16, num_frames=9, steps=2, guidance=1.0, duration_s=9 / 16,
                      references=["looks/ada.png"])
    backend = backend_class("wan")(str(model), BackendOptions(quantization="none"))
    plain = backend.render(spec.model_copy(update={"references": []}), [])
    look = resolve_look(spec, tmp_path)
    referenced = backend.render(spec, [], look)
    assert referenced.output.pipeline == "WanVACEPipeline (reference images)"
    assert referenced.output.conditioning == ["reference 1 (ada.png)"]
    assert not np.array_equal(plain.output.frames, referenced.output.frames)
    assert look.record(tmp_path)["references"][0]["sha256"] == sha256_file(tmp_path / "looks" / "ada.png")
    with pytest.raises(Exception, match="reference image 'looks/missing.png' is not a file"):
        resolve_look(spec.model_copy(update={"references": ["looks/missing.png"]}), tmp_path)
