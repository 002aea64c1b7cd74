"""The registry's parameter counts are the published configurations counted exactly (on the meta device)."""

from __future__ import annotations

import pytest

from nightshift.renderers.model_sizes import family_parameters
from nightshift.renderers.registry import BYTES_PER_PARAM, PARAMETERS, REGISTRY, weight_gb

PUBLISHED_B = {"ltx": 1.9, "ltx2": 19.0, "wan": 5.0, "hunyuan": 8.3}  # what each model card calls its denoiser


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_registry_counts_are_the_published_configurations_counted(family: str) -> None:
    counted = family_parameters(family)
    assert counted == PARAMETERS[family]
    assert counted["transformer"] / 1e9 == pytest.approx(PUBLISHED_B[family], rel=0.04)


def test_weight_bytes_follow_the_counts_per_quantization_mode() -> None:
    entry = REGISTRY["ltx"]
    assert weight_gb(entry, "none", text_encoder_resident=False) == pytest.approx(
        (PARAMETERS["ltx"]["transformer"] * 2 + PARAMETERS["ltx"]["vae"] * 2) / 1e9)
    sizes = [weight_gb(entry, mode) for mode in ("none", "fp8", "nf4")]
    assert sizes == sorted(sizes, reverse=True) and set(BYTES_PER_PARAM) >= {"none", "fp8", "int8", "nf4", "gguf"}
