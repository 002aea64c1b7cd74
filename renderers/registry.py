"""Which diffusers pipelines render each model family, and how much memory each needs.

Planning rules (frame counts, sizes, defaults) live in nightshift/families.py;
this registry adds what only rendering needs: the backend module, pipeline
class names, the transformer class (for GGUF single files), parameter counts
for memory estimates, and known model ids.

The parameter counts are exact: each component built at its published configuration on the meta
device and counted (renderers/model_sizes.py; tests/test_model_sizes.py checks these numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

from nightshift.families import FamilyRules, family_rules
from nightshift.schemas import ModelFamily


@dataclass(frozen=True)
class ModelEntry:
    family: ModelFamily
    backend: str  # module in renderers/ that drives these pipelines
    text_to_video: str
    image_to_video: str
    conditioning: str | None  # keyframes at arbitrary frame indices, if the family supports them
    transformer_class: str
    activation_gb_per_10k_tokens: float  # rough working memory per 10k latent tokens at bf16
    vae_spatial: int  # pixels per latent cell (one side)
    vae_temporal: int  # frames per latent frame
    known_ids: tuple[str, ...]

    @property
    def rules(self) -> FamilyRules:
        return family_rules(self.family)

    @property
    def parameters(self) -> dict[str, int]:
        """Exact parameter counts per component at the published configuration."""
        return PARAMETERS[self.family]

    @property
    def transformer_params_b(self) -> float:
        return self.parameters["transformer"] / 1e9

    @property
    def text_encoder_params_b(self) -> float:
        return sum(v for k, v in self.parameters.items() if k.startswith("text_encoder")) / 1e9

    @property
    def vae_params_b(self) -> float:
        return self.parameters["vae"] / 1e9

    def latent_tokens(self, width: int, height: int, frames: int) -> int:
        latent_frames = (frames - 1) // self.vae_temporal + 1
        return latent_frames * (width // self.vae_spatial) * (height // self.vae_spatial)


# Counted at the published configurations (renderers/model_sizes.py): LTX-Video 2B (0.9.x) with T5-XXL;
# LTX-2 with Gemma 3 12B (text and vision tower); Wan 2.2 TI2V-5B with UMT5-XXL; HunyuanVideo 1.5 with the
# Qwen2.5-VL-7B language model and ByT5-small.
PARAMETERS: dict[str, dict[str, int]] = {
    "ltx": {"transformer": 1_923_385_472, "text_encoder": 4_762_310_656, "vae": 419_193_649},
    "ltx2": {"transformer": 18_876_174_592, "text_encoder": 12_202_563_392, "vae": 1_222_479_601},
    "wan": {"transformer": 4_999_787_712, "text_encoder": 5_680_910_336, "vae": 704_688_668},
    "hunyuan": {"transformer": 8_326_608_160, "text_encoder": 7_070_619_136, "text_encoder_2": 217_657_472,
                "vae": 1_260_634_115},
}

REGISTRY: dict[str, ModelEntry] = {
    "ltx": ModelEntry(
        family="ltx", backend="nightshift.renderers.ltx",
        text_to_video="LTXConditionPipeline", image_to_video="LTXConditionPipeline",
        conditioning="LTXConditionPipeline", transformer_class="LTXVideoTransformer3DModel",
        activation_gb_per_10k_tokens=1.2, vae_spatial=32, vae_temporal=8,
        known_ids=("Lightricks/LTX-Video-0.9.5", "Lightricks/LTX-Video-0.9.7-dev", "Lightricks/LTX-Video-0.9.7-distilled",
                   "Lightricks/LTX-Video-0.9.8-13B-distilled"),
    ),
    "ltx2": ModelEntry(
        family="ltx2", backend="nightshift.renderers.ltx2",
        text_to_video="LTX2Pipeline", image_to_video="LTX2ImageToVideoPipeline",
        conditioning="LTX2ConditionPipeline", transformer_class="LTX2VideoTransformer3DModel",
        activation_gb_per_10k_tokens=3.0, vae_spatial=32, vae_temporal=8,
        known_ids=("Lightricks/LTX-2",),
    ),
    "wan": ModelEntry(
        family="wan", backend="nightshift.renderers.wan",
        text_to_video="WanPipeline", image_to_video="WanImageToVideoPipeline",
        conditioning=None, transformer_class="WanTransformer3DModel",
        activation_gb_per_10k_tokens=2.0, vae_spatial=32, vae_temporal=4,
        known_ids=("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"),
    ),
    "hunyuan": ModelEntry(
        family="hunyuan", backend="nightshift.renderers.hunyuan",
        text_to_video="HunyuanVideo15Pipeline", image_to_video="HunyuanVideo15ImageToVideoPipeline",
        conditioning=None, transformer_class="HunyuanVideo15Transformer3DModel",
        activation_gb_per_10k_tokens=2.5, vae_spatial=16, vae_temporal=4,
        known_ids=("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
                   "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v"),
    ),
}

# Bytes per stored parameter for the denoiser under each quantization mode.
BYTES_PER_PARAM = {"none": 2.0, "fp8": 1.0, "int8": 1.0, "nf4": 0.55, "gguf": 0.6}


def model_entry(family: str) -> ModelEntry:
    try:
        return REGISTRY[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(REGISTRY)}") from None


def family_for_model(model_id: str) -> ModelFamily | None:
    """Guess the family from a model id (used when a plan names a model the registry knows)."""
    lowered = model_id.lower()
    for entry in REGISTRY.values():
        if model_id in entry.known_ids:
            return entry.family
    if "ltx-2" in lowered or "ltx2" in lowered:
        return "ltx2"
    if "ltx" in lowered:
        return "ltx"
    if "wan" in lowered:
        return "wan"
    if "hunyuan" in lowered:
        return "hunyuan"
    return None


def weight_gb(entry: ModelEntry, quantization: str, text_encoder_resident: bool = True) -> float:
    """Bytes of weights on the device, in GB: the denoiser at the quantization's bytes per parameter, the
    VAE and text encoders in bf16."""
    weights = entry.transformer_params_b * BYTES_PER_PARAM[quantization] + entry.vae_params_b * 2
    return weights + (entry.text_encoder_params_b * 2 if text_encoder_resident else 0.0)


def estimate_vram_gb(entry: ModelEntry, quantization: str, width: int, height: int, frames: int,
                     text_encoder_resident: bool = True) -> float:
    """Peak VRAM with every component on the GPU: weights plus working memory. Rough, on the safe side."""
    weights = weight_gb(entry, quantization, text_encoder_resident)
    work = entry.activation_gb_per_10k_tokens * entry.latent_tokens(width, height, frames) / 10_000
    return round(weights + work + 1.0, 1)  # +1 GB for the CUDA context and allocator slack
