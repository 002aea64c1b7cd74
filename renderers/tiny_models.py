"""Tiny random-weight diffusers pipelines, built in code and saved as diffusers folders.

Each family at toy size (the same classes as the published checkpoints, a few thousand
parameters), saved with `save_pretrained` and loaded back through the same `from_pretrained`
path a user's downloaded model takes: the tests use them (no model hub is reachable there),
and `nightshift doctor` renders one per family to show the loading and generation path works
on this machine, with no download.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import torch

_WORDS = ["<pad>", "</s>", "<unk>", "<s>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "\n"] + \
    [f"\u2581{w}" for w in ("a", "the", "man", "woman", "light", "house", "night", "sea", "walks", "door", "wide",
                             "close", "shot", "of", "in", "on", "and")] + list(string.ascii_lowercase) + ["\u2581"]


def t5_tokenizer():
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=[(w, -float(i)) for i, w in enumerate(_WORDS)], extra_ids=0)


def _gemma_tokenizer():
    from transformers import GemmaTokenizer

    vocab = {w: i for i, w in enumerate(_WORDS)}
    return GemmaTokenizer(vocab=vocab, merges=[])


def t5_encoder(d_model: int = 16, umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kwargs = dict(vocab_size=len(_WORDS), d_model=d_model, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
                  relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    return UMT5EncoderModel(UMT5Config(**kwargs)) if umt5 else T5EncoderModel(T5Config(**kwargs))


def build_ltx(folder: Path, num_layers: int = 1) -> Path:
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXConditionPipeline, LTXVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                                             num_layers=num_layers, caption_channels=16)
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
                                decoder_layers_per_block=(1, 1, 1, 1, 1),
                                spatio_temporal_scaling=(True, True, False, False),
                                decoder_spatio_temporal_scaling=(True, True, False, False),
                                decoder_inject_noise=(False, False, False, False, False),
                                upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
                                timestep_conditioning=False, patch_size=1, patch_size_t=1,
                                encoder_causal=True, decoder_causal=False)
    pipe = LTXConditionPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=t5_encoder(),
                                tokenizer=t5_tokenizer(), transformer=transformer)
    pipe.save_pretrained(folder)
    return folder




def build_wan(folder: Path, image_to_video: bool = False) -> Path:
    """Text-to-video (WanPipeline) or first/last-frame image-to-video without an image encoder (Wan 2.2 A14B I2V)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
                           latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                        in_channels=4 * 2 + 4 if image_to_video else 4, out_channels=4,
                                        text_dim=16, freq_dim=32, ffn_dim=32, num_layers=1, cross_attn_norm=True,
                                        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    common = dict(vae=vae, text_encoder=t5_encoder(umt5=True), tokenizer=t5_tokenizer(),
                  scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=transformer)
    pipe = WanImageToVideoPipeline(**common) if image_to_video else WanPipeline(**common)
    pipe.save_pretrained(folder)
    return folder




def build_ltx2(folder: Path) -> Path:
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2ConditionPipeline, LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text_config = Gemma3TextConfig(vocab_size=len(_WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=128,
                                   sliding_window=64, pad_token_id=0, bos_token_id=4, eos_token_id=5)
    vision_config = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=16, patch_size=8)
    torch.manual_seed(0)
    text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(text_config=text_config, vision_config=vision_config,
                                                               mm_tokens_per_image=4, image_token_index=len(_WORDS) - 1))
    hidden, layers = 16, 2
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=hidden, rope_double_precision=False, rope_type="split")
    torch.manual_seed(0)
    connectors = LTX2TextConnectors(
        caption_channels=hidden, text_proj_in_factor=layers + 1, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8, video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split")
    torch.manual_seed(0)
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False)
    torch.manual_seed(0)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8)
    torch.manual_seed(0)
    vocoder = LTX2Vocoder(in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
                          upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                          leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
    pipe = LTX2ConditionPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae,
                                 text_encoder=text_encoder, tokenizer=_gemma_tokenizer(), connectors=connectors,
                                 transformer=transformer, vocoder=vocoder)
    pipe.save_pretrained(folder)
    return folder






def _qwen2_tokenizer(folder: Path):
    """A byte-level BPE tokenizer with every byte in its vocabulary and no merges, and a chat template."""
    import json

    from transformers import Qwen2Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    # Byte-level BPE spells each byte as one printable character: printable bytes as themselves, the rest
    # shifted past 255 in order.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    shifted = iter(range(256, 512))
    vocab = {chr(b if b in printable else next(shifted)): i for i, b in enumerate(range(256))}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = Qwen2Tokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                               pad_token="<|endoftext|>")
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] if m['content'] is "
                               "string else m['content'][0]['text'] }}<|im_end|>\n{% endfor %}"
                               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tokenizer


def build_hunyuan(folder: Path) -> Path:
    """HunyuanVideo 1.5 text-to-video: Qwen2.5-VL language model and ByT5 text encoders, its DiT and VAE."""
    from diffusers import (AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler,
                           HunyuanVideo15Pipeline, HunyuanVideo15Transformer3DModel)
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    with tempfile.TemporaryDirectory() as files:  # its vocab files; the pipeline saves the tokenizer itself
        tokenizer = _qwen2_tokenizer(Path(files))
    torch.manual_seed(0)
    text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=2048, rope_scaling={"type": "default", "mrope_section": [1, 1, 2]},
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"), eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id))
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=384, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                                             relative_attention_num_buckets=8))
    torch.manual_seed(0)
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=4 * 2 + 1, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
        num_refiner_layers=1, mlp_ratio=2.0, text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=8,
        rope_axes_dim=(2, 2, 4), task_type="t2v")
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo15(latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1,
                                      spatial_compression_ratio=16, temporal_compression_ratio=4)
    pipe = HunyuanVideo15Pipeline(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                                  scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), text_encoder_2=text_encoder_2,
                                  tokenizer_2=ByT5Tokenizer(), guider=ClassifierFreeGuidance(guidance_scale=1.0))
    pipe.save_pretrained(folder)
    return folder
