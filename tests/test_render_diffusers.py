"""The diffusers backends on CPU, with tiny random-weight pipelines loaded through the real from_pretrained path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nightshift.cli import main
from nightshift.config import RenderDefaults
from nightshift.schemas import KeyframeSpec, RenderSpec, Transition
from nightshift.renderers.diffusers_shot import DiffusersShotRenderer
from nightshift.renderers.shots import choose_renderer
from nightshift.renderers.encode import exact_rate, probe
from nightshift.renderers.transitions import place_shots
from nightshift.renderers.keyframes import TextToImage, prepare_keyframes
from nightshift.renderers.memory import RenderConfigError, plan_memory
from nightshift.renderers.registry import REGISTRY, estimate_vram_gb, family_for_model
from nightshift.renderers.video import BackendOptions, Keyframe, ShotOutOfMemory, backend_class
from nightshift.renderers.weights import ModelNotAvailable, resolve_weights
from nightshift.renderers import tiny_models
from tests import tiny_models as test_models


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "ltx": tiny_models.build_ltx(root / "ltx"),
        "ltx2": tiny_models.build_ltx2(root / "ltx2"),
        "wan": tiny_models.build_wan(root / "wan"),
        "wan_i2v": tiny_models.build_wan(root / "wan-i2v", image_to_video=True),
        "t2i": test_models.build_text_to_image(root / "t2i"),
    }


def _spec(family: str, model: Path, frames: int, size: int = 32, keyframes: list[KeyframeSpec] | None = None,
          **extra: object) -> RenderSpec:
    return RenderSpec(shot_id="s01-sh01", family=family, model_id=str(model), prompt="a woman walks in the light",
                      negative_prompt="blurry", seed=7, width=size, height=size, fps=24.0, num_frames=frames, steps=2,
                      guidance=1.0, duration_s=frames / 24,
                      keyframes=keyframes or [], **extra)


def _image(color: tuple[int, int, int], size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def _keyframe(index: int, color: tuple[int, int, int], tmp_path: Path, size: int = 32) -> Keyframe:
    return Keyframe(index, _image(color, size), "user", tmp_path / f"k{index}.png")


# --------------------------------------------------------------------------- registry and weights


def test_registry_knows_every_family_and_its_backend() -> None:
    for family, entry in REGISTRY.items():
        assert backend_class(family).family == family
        assert entry.rules.family == family
        assert estimate_vram_gb(entry, "none", 768, 512, 121) > estimate_vram_gb(entry, "int8", 768, 512, 121)
    assert family_for_model("Lightricks/LTX-2") == "ltx2" and family_for_model("Wan-AI/Wan2.2-TI2V-5B-Diffusers") == "wan"


def test_missing_model_names_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable) as caught:
        resolve_weights("Lightricks/LTX-Video-0.9.5")
    assert "hf download Lightricks/LTX-Video-0.9.5" in caught.value.report()
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelNotAvailable, match="model_index.json"):
        resolve_weights(str(tmp_path / "not-a-model"))


def test_weights_found_in_hf_cache_and_models_dir(tiny: dict[str, Path], tmp_path: Path) -> None:
    import huggingface_hub.constants

    repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / "models--Acme--tiny-ltx"
    shutil.copytree(tiny["ltx"], repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    found = resolve_weights("Acme/tiny-ltx")
    assert found.source == "hf-cache" and found.revision == "a" * 40
    shutil.copytree(tiny["wan"], tmp_path / "models" / "Acme" / "tiny-wan")
    assert resolve_weights("Acme/tiny-wan", tmp_path / "models").source == "folder"


def test_auto_memory_plan_follows_free_vram() -> None:
    entry = REGISTRY["ltx"]
    assert plan_memory(entry, "auto", "auto", "cuda", 768, 512, 121, free_gb=80).tier == "resident"
    roomy = plan_memory(entry, "auto", "auto", "cuda", 768, 512, 121, free_gb=80)
    tight = plan_memory(entry, "auto", "auto", "cuda", 768, 512, 121, free_gb=8)
    assert (roomy.quantization, roomy.tier) == ("none", "resident")
    assert tight.tier != "resident" and "8.0 GB free" in tight.reason
    assert plan_memory(entry, "auto", "auto", "cpu", 768, 512, 121).tier == "resident"


# --------------------------------------------------------------------------- LTX-Video


def test_ltx_text_to_video_keyframes_and_resident_pipeline(tiny: dict[str, Path], tmp_path: Path) -> None:
    backend = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="none"))
    plain = backend.render(_spec("ltx", tiny["ltx"], 17), [])
    assert plain.output.frames.shape == (17, 32, 32, 3) and plain.output.frames.dtype == np.uint8
    assert plain.output.pipeline == "LTXConditionPipeline (text-to-video)" and plain.tier == "resident"

    keys = [_keyframe(0, (255, 0, 0), tmp_path), _keyframe(8, (0, 255, 0), tmp_path), _keyframe(16, (0, 0, 255), tmp_path)]
    conditioned = backend.render(_spec("ltx", tiny["ltx"], 17), keys)
    assert conditioned.output.conditioning == ["image@0 (user)", "image@8 (user)", "image@16 (user)"]
    assert not np.array_equal(conditioned.output.frames, plain.output.frames)
    again = backend.render(_spec("ltx", tiny["ltx"], 17), [])
    assert np.array_equal(again.output.frames, plain.output.frames)  # same seed, same frames
    assert backend.loads == 1  # the pipeline stayed resident across shots


def test_ltx_snaps_keyframe_indices_to_latent_frames(tiny: dict[str, Path], tmp_path: Path) -> None:
    backend = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="none"))
    out = backend.render(_spec("ltx", tiny["ltx"], 17), [_keyframe(0, (9, 9, 9), tmp_path), _keyframe(11, (200, 9, 9), tmp_path)])
    assert out.output.conditioning == ["image@0 (user)", "image@8 (user)"]
    assert "placed at 8" in out.output.notes[0]
    with pytest.raises(ValueError, match="outside 0..16"):
        backend.render(_spec("ltx", tiny["ltx"], 17), [_keyframe(40, (1, 1, 1), tmp_path)])


def test_ltx_latent_upsampler_renders_half_size_then_refines(tiny: dict[str, Path], tmp_path: Path) -> None:
    upsampler = test_models.build_ltx_latent_upsampler(tmp_path / "upsampler")
    backend = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="none", latent_upsampler=str(upsampler)))
    calls: list[tuple[int, int, str]] = []
    out = backend.render(_spec("ltx", tiny["ltx"], 17, size=64), [_keyframe(0, (200, 40, 40), tmp_path, size=64)])
    assert out.output.frames.shape == (17, 64, 64, 3)
    assert out.output.pipeline == "LTXConditionPipeline + LTXLatentUpsamplePipeline"
    assert any("32x32 -> 64x64" in note for note in out.output.notes)
    assert backend.describe()["latent_upsampler"] == str(upsampler)
    # The latents really go through the upsampler: spy on its network's input and output sizes.
    network = backend.upsampler.latent_upsampler
    network.register_forward_hook(lambda module, args, result: calls.append((args[0].shape[-1], result.shape[-1], "up")))
    again = backend.render(_spec("ltx", tiny["ltx"], 17, size=64), [_keyframe(0, (200, 40, 40), tmp_path, size=64)])
    assert calls == [(8, 16, "up")]  # 32 px / VAE factor 4 = 8 latent columns, upsampled to 16
    assert np.array_equal(again.output.frames, out.output.frames)  # seeded: the three passes repeat exactly
    with pytest.raises(ModelNotAvailable, match="config.json"):
        backend_class("ltx")(str(tiny["ltx"]), BackendOptions(latent_upsampler=str(tmp_path)))


def test_gguf_single_file_transformer(tiny: dict[str, Path], tmp_path: Path) -> None:
    gguf_file = test_models.write_gguf(tiny["ltx"], tmp_path / "tiny-ltx-Q8_0.gguf")
    backend = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="gguf", gguf_file=gguf_file))
    out = backend.render(_spec("ltx", tiny["ltx"], 9), [])  # the backend's options decide the quantization
    assert out.quantization == "gguf" and out.output.frames.shape == (9, 32, 32, 3)
    packed = {name: p for name, p in backend.pipe.transformer.named_parameters() if type(p).__name__ == "GGUFParameter"}
    assert "transformer_blocks.0.ff.net.2.weight" in packed  # loaded from the file, still Q8_0 in memory
    assert all(int(p.quant_type) == 8 for p in packed.values())


@pytest.mark.parametrize("mode", ["none", "fp8", "int8"])
def test_cpu_quantization_modes(tiny: dict[str, Path], mode: str) -> None:
    backend = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization=mode))
    out = backend.render(_spec("ltx", tiny["ltx"], 9), [])
    assert out.quantization == mode and out.output.frames.shape == (9, 32, 32, 3)
    weight = backend.pipe.transformer.transformer_blocks[0].attn1.to_q.weight
    if mode == "fp8":
        assert weight.dtype == torch.float8_e4m3fn
    elif mode == "int8":
        assert "Int8" in type(weight).__name__ or "AffineQuantized" in type(weight).__name__
    else:
        assert weight.dtype == torch.float32


def test_nf4_and_cuda_tiers_are_refused_on_cpu_with_advice(tiny: dict[str, Path]) -> None:
    with pytest.raises(RenderConfigError, match="nf4 needs a CUDA GPU"):
        backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="nf4"))
    with pytest.raises(RenderConfigError) as caught:
        backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="gguf"))
    assert "render.gguf_file" in caught.value.report()
    backend = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="none", tier="model_offload"))
    with pytest.raises(RenderConfigError, match="needs a CUDA GPU"):
        backend.render(_spec("ltx", tiny["ltx"], 9), [])


def test_group_offload_tier_renders_the_same_frames(tiny: dict[str, Path]) -> None:
    resident = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="none", tier="resident"))
    offloaded = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="none", tier="group_offload"))
    a = resident.render(_spec("ltx", tiny["ltx"], 9), []).output.frames
    b = offloaded.render(_spec("ltx", tiny["ltx"], 9), [])
    assert b.tier == "group_offload"
    assert np.abs(a.astype(int) - b.output.frames.astype(int)).max() <= 2


def _fail_with_oom(backend, times: int) -> list[str]:
    """Make the pipeline call raise CUDA's out-of-memory error `times` times (as a real OOM would, mid-call)."""
    seen: list[str] = []
    original = type(backend).generate

    def generate(self, spec, keyframes):
        seen.append(self.memory.tier)
        if len(seen) <= times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, spec, keyframes)

    backend.generate = generate.__get__(backend)
    return seen


def test_out_of_memory_retries_at_the_next_lower_tier(tiny: dict[str, Path]) -> None:
    backend = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="none", tier="resident"))
    seen = _fail_with_oom(backend, times=1)
    out = backend.render(_spec("ltx", tiny["ltx"], 9), [])
    assert seen == ["resident", "resident_tiled"]
    assert out.tier == "resident_tiled" and out.attempts == ["none/resident: out of memory"]
    assert backend.pipe.vae.use_tiling and backend.loads == 2


def test_out_of_memory_on_every_tier_names_each_tier(tiny: dict[str, Path]) -> None:
    backend = backend_class("ltx")(str(tiny["ltx"]), BackendOptions(quantization="none", tier="resident"))
    _fail_with_oom(backend, times=99)
    with pytest.raises(ShotOutOfMemory) as caught:
        backend.render(_spec("ltx", tiny["ltx"], 9), [])
    message = str(caught.value)
    for tier in ("resident", "resident_tiled", "group_offload"):
        assert f"none/{tier}: out of memory" in message


# --------------------------------------------------------------------------- Wan 2.2 and LTX-2


def test_wan_text_to_video_and_first_last_frame(tiny: dict[str, Path], tmp_path: Path) -> None:
    t2v = backend_class("wan")(str(tiny["wan"]), BackendOptions(quantization="none"))
    out = t2v.render(_spec("wan", tiny["wan"], 9), [_keyframe(0, (255, 0, 0), tmp_path)])
    assert out.output.pipeline == "WanPipeline (text-to-video)" and out.output.frames.shape == (9, 32, 32, 3)
    assert "keyframes were not used" in out.output.notes[0]

    i2v = backend_class("wan")(str(tiny["wan_i2v"]), BackendOptions(quantization="none"))
    first_last = i2v.render(_spec("wan", tiny["wan_i2v"], 9), [_keyframe(0, (255, 0, 0), tmp_path), _keyframe(8, (0, 0, 255), tmp_path)])
    assert first_last.output.pipeline == "WanImageToVideoPipeline (first/last frame)"
    assert first_last.output.conditioning == ["image@0 (user)", "image@8 (user)"]
    first_only = i2v.render(_spec("wan", tiny["wan_i2v"], 9), [_keyframe(0, (255, 0, 0), tmp_path)])
    assert not np.array_equal(first_only.output.frames, first_last.output.frames)
    with pytest.raises(Exception, match="image-to-video and the shot has no first frame"):
        i2v.render(_spec("wan", tiny["wan_i2v"], 9), [])
    assert i2v.loads == 1


def test_ltx2_keeps_its_audio(tiny: dict[str, Path], tmp_path: Path) -> None:
    backend = backend_class("ltx2")(str(tiny["ltx2"]), BackendOptions(quantization="none"))
    out = backend.render(_spec("ltx2", tiny["ltx2"], 9), [_keyframe(0, (20, 40, 60), tmp_path)])
    assert out.output.frames.shape == (9, 32, 32, 3) and out.output.conditioning == ["image@0 (user)"]
    assert out.output.audio is not None and out.output.audio.shape[0] == 2 and out.output.sample_rate == 16000


# --------------------------------------------------------------------------- keyframes


def test_keyframes_from_user_images_and_text_to_image(tiny: dict[str, Path], tmp_path: Path) -> None:
    plan_folder = tmp_path / "plan"
    plan_folder.mkdir()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(plan_folder / "blender-first.png")
    spec = _spec("ltx", tiny["ltx"], 17, keyframes=[KeyframeSpec(frame_index=0, image_path="blender-first.png"),
                                                     KeyframeSpec(frame_index=16, prompt="the door, night")])
    t2i = TextToImage(str(tiny["t2i"]), steps=2)
    keys, notes = prepare_keyframes(spec, plan_folder, tmp_path / "keyframes", t2i)
    assert [(k.frame_index, k.source) for k in keys] == [(0, "user"), (16, "generated")] and notes == []
    for key in keys:
        with Image.open(key.path) as saved:
            assert saved.format == "PNG" and saved.size == (32, 32)
    again, _ = prepare_keyframes(spec, plan_folder, tmp_path / "again", t2i)
    assert np.array_equal(np.asarray(again[1].image), np.asarray(keys[1].image))  # seeded

    no_model, notes = prepare_keyframes(spec, plan_folder, tmp_path / "k2", None)
    assert len(no_model) == 1 and "no keyframe model configured" in notes[0]
    escape = _spec("ltx", tiny["ltx"], 17, keyframes=[KeyframeSpec(frame_index=0, image_path="../outside.png")])
    with pytest.raises(Exception, match="outside the plan folder|not found"):
        prepare_keyframes(escape, plan_folder, tmp_path / "k3", None)


# --------------------------------------------------------------------------- end to end


def _plan(corpus: Path, tmp_path: Path, model: Path, family: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in {"FAMILY": family, "MODEL_ID": str(model), "WIDTH": "32", "HEIGHT": "32", "FPS": "8",
                       "STEPS": "2", "GUIDANCE": "1.0", "QUANTIZATION": "none"}.items():
        monkeypatch.setenv(f"NIGHTSHIFT_RENDER__{key}", value)
    out = tmp_path / "plan"
    assert main(["plan", str(corpus / "paper_boat.txt"), "--planner", "rules", "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # about 45 s (every shot at 4K with sound); .ci/run runs it after the default suite (pytest -m slow FILE)
def test_render_cli_with_diffusers_makes_4k_clips_with_audio(corpus: Path, tmp_path: Path, tiny: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    plan = _plan(corpus, tmp_path, tiny["ltx2"], "ltx2", monkeypatch)
    specs = json.loads((plan / "renderplan.json").read_text())["specs"][:2]
    ids = ",".join(s["shot_id"] for s in specs)
    monkeypatch.setenv("NIGHTSHIFT_RENDER__KEYFRAME_MODEL", str(tiny["t2i"]))
    monkeypatch.setenv("NIGHTSHIFT_RENDER__KEYFRAME_STEPS", "2")
    assert main(["render", str(plan), "--renderer", "diffusers", "--device", "cpu", "--shots", ids]) == 0
    assert "renderer: diffusers (--renderer diffusers on cpu" in capsys.readouterr().err
    records = {r["shot_id"]: r for r in json.loads((plan / "renders.json").read_text())["clips"]}
    for spec in specs:
        record = records[spec["shot_id"]]
        info = probe(plan / record["file"])
        assert (info.width, info.height, info.frames) == (3840, 2160, spec["num_frames"])
        assert float(info.fps) == spec["fps"] and info.duration_s == pytest.approx(spec["num_frames"] / spec["fps"])
        assert info.has_audio and info.audio_codec == "aac" and record["audio"]
        assert not record["animatic"] and record["tier"] == "resident" and record["quantization"] == "none"
        assert record["keyframes"] and all((plan / k).is_file() for k in record["keyframes"])
    assert not (plan / "paper-boat.mp4").exists()  # not every shot is rendered: no cut yet
    assert main(["render", str(plan), "--renderer", "diffusers", "--device", "cpu"]) == 0  # the rest, then the cut
    every = json.loads((plan / "renderplan.json").read_text())["specs"]
    layout = place_shots([s["num_frames"] for s in every], [Transition(s["transition"]) for s in every],
                         exact_rate(every[0]["fps"]))
    cut = probe(plan / "paper-boat.mp4")
    assert (cut.width, cut.height) == (3840, 2160) and cut.frames == layout[-1].end
    assert cut.has_audio and cut.audio_codec == "aac"  # the model's sound survives into the cut
    assert cut.audio_duration_s == pytest.approx(cut.duration_s, abs=0.1)


@pytest.mark.slow  # about 14 s (a Wan shot at 4K); .ci/run runs it after the default suite (pytest -m slow FILE)
def test_render_cli_wan_end_to_end(corpus: Path, tmp_path: Path, tiny: dict[str, Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(corpus, tmp_path, tiny["wan"], "wan", monkeypatch)
    first = json.loads((plan / "renderplan.json").read_text())["specs"][0]
    assert main(["render", str(plan), "--renderer", "diffusers", "--device", "cpu", "--shots", first["shot_id"]]) == 0
    info = probe(plan / "shots" / f"{first['shot_id']}.mp4")
    assert (info.width, info.height, info.frames, info.has_audio) == (3840, 2160, first["num_frames"], False)


def test_auto_renderer_says_why_it_chose_the_animatic(corpus: Path, tmp_path: Path, tiny: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    plan_folder = _plan(corpus, tmp_path, tiny["ltx"], "ltx", monkeypatch)
    from nightshift.plan_files import load_plan_folder

    _, plan = load_plan_folder(plan_folder)
    choice = choose_renderer("auto", plan, RenderDefaults())
    assert choice.kind == "animatic" and "no CUDA GPU" in choice.reason
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    missing = plan.model_copy(update={"specs": [s.model_copy(update={"model_id": "Acme/absent"}) for s in plan.specs]})
    choice = choose_renderer("auto", missing, RenderDefaults())
    assert choice.kind == "animatic" and "hf download Acme/absent" in choice.reason
    assert choose_renderer("auto", plan, RenderDefaults()).kind == "diffusers"


def test_diffusers_renderer_refuses_missing_weights_up_front(corpus: Path, tmp_path: Path, tiny: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    plan = _plan(corpus, tmp_path, tiny["ltx"], "ltx", monkeypatch)
    data = json.loads((plan / "renderplan.json").read_text())
    for spec in data["specs"]:
        spec["model_id"] = "Lightricks/LTX-Video-0.9.5"
    (plan / "renderplan.json").write_text(json.dumps(data))
    assert main(["render", str(plan), "--renderer", "diffusers", "--device", "cpu"]) == 1
    assert "hf download Lightricks/LTX-Video-0.9.5" in capsys.readouterr().err
    assert not (plan / "shots").exists()


def test_shot_renderer_loads_each_model_once(tiny: dict[str, Path], tmp_path: Path) -> None:
    renderer = DiffusersShotRenderer(RenderDefaults(quantization="none"), "cpu")
    spec = _spec("ltx", tiny["ltx"], 9)
    assert renderer.backend_for(spec) is renderer.backend_for(spec.model_copy(update={"shot_id": "s01-sh02"}))
