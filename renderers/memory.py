"""Quantization modes and memory tiers, mapped onto diffusers' own mechanisms.

Quantization (how the denoiser's weights are stored):
  none  - the compute dtype (bf16 on CUDA, fp32 on CPU)
  fp8   - layerwise casting: weights stored in float8_e4m3fn, upcast per layer for compute
  int8  - torchao int8 weight-only
  nf4   - bitsandbytes 4-bit NF4 (CUDA only)
  gguf  - a GGUF single file for the transformer (e.g. Q4_K_M), dequantized on the fly

Tiers (where the weights live while the pipeline runs), from fastest to leanest:
  resident         - everything on the device
  resident_tiled   - everything on the device, VAE decodes in tiles and slices
  group_offload    - blocks stream from CPU memory as they are needed (CUDA streams when on CUDA)
  model_offload    - whole components move to the GPU only while they run (CUDA only)
  sequential_offload - every layer moves on demand: slowest, smallest (CUDA only)
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import torch

from nightshift.errors import NightshiftError
from nightshift.renderers.registry import ModelEntry, estimate_vram_gb
from nightshift.schemas import MEMORY_TIERS, MemoryTier, QuantizationMode

CUDA_ONLY_TIERS = {"model_offload", "sequential_offload"}


class RenderConfigError(NightshiftError):
    """A quantization or tier that cannot run on this machine."""


@dataclass(frozen=True)
class MemoryPlan:
    quantization: QuantizationMode
    tier: MemoryTier
    reason: str


def tiers_for(device: str) -> tuple[MemoryTier, ...]:
    """The tier ladder available on `device`, fastest first."""
    return MEMORY_TIERS if device.startswith("cuda") else tuple(t for t in MEMORY_TIERS if t not in CUDA_ONLY_TIERS)


def lower_tiers(tier: MemoryTier, device: str) -> list[MemoryTier]:
    ladder = tiers_for(device)
    return list(ladder[ladder.index(tier) + 1:]) if tier in ladder else []


def compute_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def check_quantization(mode: str, device: str, gguf_file: Path | None) -> None:
    """Refuse up front what cannot run, with what to do instead."""
    if mode == "nf4":
        if not device.startswith("cuda"):
            raise RenderConfigError("quantization nf4 needs a CUDA GPU (bitsandbytes)", "use int8 or fp8 on this machine")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise RenderConfigError("quantization nf4 needs bitsandbytes",
                                    "pip install 'nightshift-studio[cuda]'") from None
    if mode == "int8":
        try:
            import torchao  # noqa: F401
        except ImportError:
            raise RenderConfigError("quantization int8 needs torchao", "pip install 'nightshift-studio[quant]'") from None
    if mode == "gguf":
        if gguf_file is None:
            raise RenderConfigError("quantization gguf needs a GGUF file for the transformer",
                                    "set render.gguf_file to a local .gguf (e.g. a Q4_K_M or Q8_0 file)")
        if not gguf_file.is_file():
            raise RenderConfigError(f"{gguf_file}: GGUF file not found", "check render.gguf_file")


def transformer_quantization_config(mode: str, dtype: torch.dtype):
    """The diffusers quantization config to load the transformer with, or None."""
    if mode == "int8":
        from diffusers import TorchAoConfig
        from torchao.quantization import Int8WeightOnlyConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    if mode == "nf4":
        from diffusers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    if mode == "gguf":
        from diffusers import GGUFQuantizationConfig

        return GGUFQuantizationConfig(compute_dtype=dtype)
    return None


def apply_fp8_storage(transformer: torch.nn.Module, dtype: torch.dtype) -> None:
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)


def apply_tier(pipe, tier: MemoryTier, device: str) -> None:
    """Place a freshly loaded pipeline's weights for `tier` (a pipeline gets one tier in its life)."""
    if tier in CUDA_ONLY_TIERS and not device.startswith("cuda"):
        raise RenderConfigError(f"memory tier {tier} needs a CUDA GPU", f"use one of {', '.join(tiers_for(device))}")
    vae = getattr(pipe, "vae", None)
    if tier != "resident" and vae is not None:
        # Tiled decoding bounds the VAE's peak, which is often the largest single allocation of a shot.
        if hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
    if tier in ("resident", "resident_tiled"):
        pipe.to(device)
    elif tier == "group_offload":
        from diffusers.hooks import apply_group_offloading

        for name, component in pipe.components.items():
            if not isinstance(component, torch.nn.Module):
                continue
            if name in ("transformer", "transformer_2", "text_encoder"):
                apply_group_offloading(component, onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                       offload_type="block_level", num_blocks_per_group=1,
                                       use_stream=device.startswith("cuda"))
            else:
                component.to(device)
    elif tier == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif tier == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=device)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def free_vram_gb(device: str) -> float | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return free / 1024**3


def plan_memory(entry: ModelEntry, quantization: str, tier: str, device: str, width: int, height: int, frames: int,
                free_gb: float | None = None) -> MemoryPlan:
    """Resolve `auto` quantization and tier from free VRAM and the registry's estimate."""
    if not device.startswith("cuda"):
        q = "none" if quantization == "auto" else quantization
        t = "resident" if tier == "auto" else tier
        return MemoryPlan(q, t, f"{device}: no VRAM to budget; {q}, {t}")  # type: ignore[arg-type]
    free = free_vram_gb(device) if free_gb is None else free_gb
    assert free is not None
    budget = free * 0.9
    quants = ["none", "fp8", "int8"] if quantization == "auto" else [quantization]
    tiers = [t for t in tiers_for(device)] if tier == "auto" else [tier]
    for t in tiers:
        for q in quants:
            need = _estimate_for_tier(entry, q, t, width, height, frames)
            if need <= budget:
                return MemoryPlan(q, t, f"{free:.1f} GB free; {entry.family} at {q}/{t} needs about {need:.1f} GB")  # type: ignore[arg-type]
    q, t = quants[-1], tiers[-1]
    return MemoryPlan(q, t, f"{free:.1f} GB free; nothing fits the estimate, trying the leanest: {q}/{t}")  # type: ignore[arg-type]


def _estimate_for_tier(entry: ModelEntry, quantization: str, tier: str, width: int, height: int, frames: int) -> float:
    full = estimate_vram_gb(entry, quantization, width, height, frames)
    if tier == "resident":
        return full
    if tier == "resident_tiled":
        return full * 0.9
    if tier == "model_offload":  # the largest component plus working memory
        return estimate_vram_gb(entry, quantization, width, height, frames, text_encoder_resident=False)
    if tier == "group_offload":
        return estimate_vram_gb(entry, quantization, width, height, frames, text_encoder_resident=False) * 0.5
    return 2.0 + entry.activation_gb_per_10k_tokens * entry.latent_tokens(width, height, frames) / 10_000
