"""diffusers' speed settings (a step cache, compiled repeated blocks, the attention backend): applied to the loaded
transformer of a tiny random-weight pipeline, and recorded with the clip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nightshift.renderers import tiny_models
from nightshift.renderers.speed import SpeedSettingError, apply_speed_settings
from nightshift.renderers.video import BackendOptions, backend_class
from nightshift.schemas import RenderSpec


@pytest.fixture(scope="module")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_ltx(tmp_path_factory.mktemp("tiny") / "ltx", num_layers=2)  # a cache needs 2 blocks


def _spec(model: Path) -> RenderSpec:
    return RenderSpec(shot_id="s01-sh01", family="ltx", model_id=str(model), prompt="a woman walks in the light",
                      seed=7, width=32, height=32, fps=24.0, num_frames=9, steps=6, guidance=1.0, duration_s=9 / 24)


@pytest.mark.parametrize("cache", ["first_block", "taylorseer"])
def test_a_step_cache_renders_and_is_recorded(tiny_ltx: Path, cache: str) -> None:
    backend = backend_class("ltx")(str(tiny_ltx), BackendOptions(quantization="none", cache=cache))
    rendered = backend.render(_spec(tiny_ltx), [])
    assert rendered.output.frames.shape == (9, 32, 32, 3)
    assert backend.speed["cache"] == cache and backend.speed["cache_config"]
    assert getattr(backend.pipe.transformer, "_diffusers_hook", None) is not None  # the cache's hooks are on it


def test_compiled_blocks_and_the_attention_backend_are_checked_and_recorded(tiny_ltx: Path) -> None:
    from diffusers import LTXVideoTransformer3DModel

    transformer = LTXVideoTransformer3DModel.from_pretrained(tiny_ltx, subfolder="transformer")
    record = apply_speed_settings(transformer, compile_blocks=True)
    assert record["compiled_blocks"] == ["LTXVideoTransformerBlock"]
    assert all(block._compiled_call_impl is not None for block in transformer.transformer_blocks)
    with pytest.raises(SpeedSettingError, match="render.attention_backend = 'warp' is not a diffusers attention"):
        apply_speed_settings(transformer, attention_backend="warp")
    with pytest.raises(SpeedSettingError, match="render.cache"):
        apply_speed_settings(torch.nn.Linear(2, 2), cache="first_block")
