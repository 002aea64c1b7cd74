"""Tiny random-weight models only the tests need (the four families doctor renders are in
nightshift.renderers.tiny_models): a latent upsampler, Wan VACE, a text-to-image model, a GGUF file."""

from __future__ import annotations

from pathlib import Path

import torch

from nightshift.renderers.tiny_models import t5_encoder, t5_tokenizer


def build_ltx_latent_upsampler(folder: Path, latent_channels: int = 8) -> Path:
    """A spatial 2x latent upsampler for the tiny LTX above (its VAE has 8 latent channels)."""
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    torch.manual_seed(0)
    LTXLatentUpsamplerModel(in_channels=latent_channels, mid_channels=32, num_blocks_per_stage=1, dims=3,
                            spatial_upsample=True, temporal_upsample=False).save_pretrained(folder)
    return folder


def build_wan_vace(folder: Path) -> Path:
    """Wan VACE (text-to-video with reference images), the shape of Wan2.1-VACE / Wan2.2-VACE-Fun."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
                           latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    torch.manual_seed(0)
    transformer = WanVACETransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                            in_channels=4, out_channels=4, text_dim=16, freq_dim=32, ffn_dim=32,
                                            num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                            rope_max_seq_len=32, vace_layers=[0], vace_in_channels=4 * 2 + 8 * 8)
    pipe = WanVACEPipeline(vae=vae, text_encoder=t5_encoder(umt5=True), tokenizer=t5_tokenizer(),
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=transformer)
    pipe.save_pretrained(folder)
    return folder


def build_text_to_image(folder: Path) -> Path:
    """A tiny PixArt-Sigma (T5 text encoder, DiT, KL VAE): the shape of a local keyframe model."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(sample_size=32, num_layers=1, patch_size=2, attention_head_dim=8,
                                           num_attention_heads=2, caption_channels=16, in_channels=4,
                                           cross_attention_dim=16, out_channels=8, attention_bias=True,
                                           activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                                           norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4)
    pipe = PixArtSigmaPipeline(tokenizer=t5_tokenizer(), text_encoder=t5_encoder(), vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.save_pretrained(folder)
    return folder


def write_gguf(model_folder: Path, path: Path) -> Path:
    """The tiny LTX transformer as a GGUF single file: Q8_0 where a row fills whole 32-value blocks, F32 elsewhere."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    state = load_file(str(model_folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    writer = gguf.GGUFWriter(str(path), arch="ltxv")
    for name, tensor in state.items():
        array = tensor.float().numpy()
        if array.ndim == 2 and array.shape[-1] % 32 == 0:
            packed = gguf.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, array.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
