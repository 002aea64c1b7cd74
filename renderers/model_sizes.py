"""Each family's parameter counts at its published configuration, counted exactly rather than quoted.

Every component is built on PyTorch's meta device (shapes only: no memory, no download) and its parameters
are counted. Where diffusers' class defaults are the published checkpoint's configuration they are used as
they are; where they are not (Wan 2.2 TI2V-5B, the text encoders), the values of the checkpoint's
config.json are written out here. `benchmarks/model_sizes.py` prints the counts; the registry
(renderers/registry.py) holds them, and tests/test_model_sizes.py checks the two agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _t5_xxl_encoder(vocab_size: int, umt5: bool = False) -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    # google/t5-v1_1-xxl and google/umt5-xxl: the encoders LTX-Video and Wan use
    common = dict(vocab_size=vocab_size, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                  feed_forward_proj="gated-gelu")
    return UMT5EncoderModel(UMT5Config(**common)) if umt5 else T5EncoderModel(T5Config(**common))


def _gemma3_12b() -> torch.nn.Module:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    # google/gemma-3-12b: LTX-2's text encoder (text model and its SigLIP vision tower)
    text = Gemma3TextConfig(vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                            num_attention_heads=16, num_key_value_heads=8, head_dim=256)
    vision = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                image_size=896, patch_size=14)
    return Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256))


def _qwen25_vl_7b_text() -> torch.nn.Module:
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    # Qwen/Qwen2.5-VL-7B-Instruct's language model: HunyuanVideo 1.5's first text encoder
    return Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                                    num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4))


def _byt5_small() -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    # google/byt5-small (the glyph encoder HunyuanVideo 1.5 uses as text_encoder_2; 1472 = its text_embed_2_dim)
    return T5EncoderModel(T5Config(vocab_size=384, d_model=1472, d_kv=64, d_ff=3584, num_layers=12, num_heads=6,
                                   feed_forward_proj="gated-gelu"))


def _ltx() -> dict[str, Callable[[], torch.nn.Module]]:
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    return {"transformer": LTXVideoTransformer3DModel, "text_encoder": lambda: _t5_xxl_encoder(32128),
            "vae": AutoencoderKLLTXVideo}


def _ltx2() -> dict[str, Callable[[], torch.nn.Module]]:
    from diffusers import AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel

    return {"transformer": LTX2VideoTransformer3DModel, "text_encoder": _gemma3_12b, "vae": AutoencoderKLLTX2Video}


def _wan() -> dict[str, Callable[[], torch.nn.Module]]:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    # Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer/config.json and vae/config.json
    return {"transformer": lambda: WanTransformer3DModel(
                patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
                text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6),
            "text_encoder": lambda: _t5_xxl_encoder(256384, umt5=True),
            "vae": lambda: AutoencoderKLWan(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4],
                                            num_res_blocks=2, temperal_downsample=[False, True, True], in_channels=12,
                                            out_channels=12, patch_size=2, scale_factor_spatial=16,
                                            scale_factor_temporal=4, is_residual=True)}


def _hunyuan() -> dict[str, Callable[[], torch.nn.Module]]:
    from diffusers import AutoencoderKLHunyuanVideo15, HunyuanVideo15Transformer3DModel

    return {"transformer": HunyuanVideo15Transformer3DModel, "text_encoder": _qwen25_vl_7b_text,
            "text_encoder_2": _byt5_small, "vae": AutoencoderKLHunyuanVideo15}


PUBLISHED: dict[str, Callable[[], dict[str, Callable[[], torch.nn.Module]]]] = {
    "ltx": _ltx, "ltx2": _ltx2, "wan": _wan, "hunyuan": _hunyuan}


def count_parameters(build: Callable[[], torch.nn.Module]) -> int:
    """Exact parameter count of a module, built on the meta device."""
    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())


def family_parameters(family: str) -> dict[str, int]:
    """Parameters of each component of a family at its published configuration."""
    return {name: count_parameters(build) for name, build in PUBLISHED[family]().items()}
