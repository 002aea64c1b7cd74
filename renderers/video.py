"""The one small interface every diffusers video backend implements, and what they share.

A backend loads its pipeline once (resident across the shots of a run), renders
a RenderSpec plus keyframe images into frames (and audio, where the model makes
it), and on a CUDA out-of-memory reloads at the next lower memory tier and
tries the same shot again. Family files (ltx.py, ltx2.py, wan.py, hunyuan.py)
only say how to call their pipelines.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from nightshift import faults
from nightshift.errors import NightshiftError
from nightshift.schemas import RenderSpec
from nightshift.renderers.looks import ShotLook
from nightshift.renderers.speed import apply_speed_settings
from nightshift.renderers.memory import (MemoryPlan, QuantizationMode, MemoryTier, apply_fp8_storage, apply_tier, check_quantization,
                              compute_dtype, free_memory, is_out_of_memory, lower_tiers, plan_memory,
                              transformer_quantization_config)
from nightshift.renderers.registry import ModelEntry, model_entry
from nightshift.renderers.weights import WeightsLocation, resolve_weights


class ShotOutOfMemory(NightshiftError):
    """Every memory tier ran out of memory for this shot."""

    def __init__(self, shot_id: str, attempts: list[str]) -> None:
        self.attempts = attempts
        super().__init__(f"{shot_id}: out of memory at every tier tried ({'; '.join(attempts)})",
                         "lower the resolution or frame count, pick a smaller quantization (int8, nf4, gguf), "
                         "or close other programs using the GPU")


@dataclass(frozen=True)
class Keyframe:
    frame_index: int
    image: Image.Image
    source: str  # "user" (supplied file) or "generated" (text-to-image)
    path: Path  # the PNG saved next to the clip


@dataclass(frozen=True)
class BackendOptions:
    device: str = "cpu"
    quantization: str = "auto"  # none|fp8|int8|nf4|gguf|auto
    tier: str = "auto"  # a memory tier or auto
    gguf_file: Path | None = None
    models_dir: Path | None = None
    latent_upsampler: str | None = None  # LTX-Video: a spatial latent upsampler (model id or folder)
    cache: str = "none"  # renderers/speed.py
    cache_threshold: float = 0.05
    compile_blocks: bool = False
    attention_backend: str = "native"


@dataclass
class VideoOutput:
    frames: np.ndarray  # (frames, height, width, 3) uint8
    audio: np.ndarray | None = None  # (channels, samples) float32 in [-1, 1]
    sample_rate: int | None = None
    pipeline: str = ""
    conditioning: list[str] = field(default_factory=list)  # e.g. ["image@0 (user)", "image@96 (generated)"]
    notes: list[str] = field(default_factory=list)


@dataclass
class RenderedVideo:
    output: VideoOutput
    quantization: QuantizationMode
    tier: MemoryTier
    attempts: list[str]  # tiers that ran out of memory before this one
    memory_reason: str
    seconds: float


def to_uint8_frames(frames: Any) -> np.ndarray:
    """diffusers `output_type="np"` video (batch, frames, H, W, 3) floats in [0, 1] -> uint8 frames."""
    array = frames.float().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim == 5:
        array = array[0]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"unexpected video output shape {array.shape}")
    return (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)


class DiffusersVideoBackend:
    """Base class: weights, quantization, memory tier, the OOM ladder. Subclasses implement `generate`."""

    family: ClassVar[str]
    pipeline_class: ClassVar[str | None] = None  # None: the class named in model_index.json

    def __init__(self, model_id: str, options: BackendOptions = BackendOptions()) -> None:
        self.entry: ModelEntry = model_entry(self.family)
        self.options = options
        self.location: WeightsLocation = resolve_weights(model_id, options.models_dir)
        self.device = options.device
        self.dtype = compute_dtype(self.device)
        if options.quantization != "auto":
            check_quantization(options.quantization, self.device, options.gguf_file)
        self.pipe: Any = None
        self.memory: MemoryPlan | None = None
        self.loads = 0  # how many times weights were read from disk (once per run unless memory ran out)
        self.speed: dict[str, object] = {}  # the speed settings applied at load (renderers/speed.py)
        self.adapters: set[str] = set()  # LoRA adapters loaded into the pipeline
        self.look = ShotLook()  # the shot being rendered: its characters' references and LoRAs

    # ------------------------------------------------------------------ loading

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.location.model_id, "weights": str(self.location.path), "source": self.location.source,
                "revision": self.location.revision, "device": self.device, "dtype": str(self.dtype).removeprefix("torch.")}

    def ensure_loaded(self, spec: RenderSpec) -> None:
        if self.pipe is None:
            plan = plan_memory(self.entry, self.options.quantization, self.options.tier, self.device,
                               spec.width, spec.height, spec.num_frames)
            check_quantization(plan.quantization, self.device, self.options.gguf_file)
            self._load(plan)

    def _load(self, plan: MemoryPlan) -> None:
        diffusers = importlib.import_module("diffusers")
        path = self.location.path
        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True}
        quant_config = transformer_quantization_config(plan.quantization, self.dtype)
        transformer_cls = getattr(diffusers, _transformer_class(path) or "", None) or getattr(
            diffusers, self.entry.transformer_class)
        if plan.quantization == "gguf":
            kwargs["transformer"] = transformer_cls.from_single_file(
                str(self.options.gguf_file), quantization_config=quant_config, config=str(path),
                subfolder="transformer", dtype=self.dtype, local_files_only=True)
        elif quant_config is not None:
            kwargs["transformer"] = transformer_cls.from_pretrained(
                path, subfolder="transformer", quantization_config=quant_config, dtype=self.dtype, local_files_only=True)
        pipeline_cls = getattr(diffusers, self.pipeline_class or "DiffusionPipeline")
        pipe = pipeline_cls.from_pretrained(path, **kwargs)
        if plan.quantization == "fp8":
            apply_fp8_storage(pipe.transformer, self.dtype)
        pipe.set_progress_bar_config(disable=True)
        apply_tier(pipe, plan.tier, self.device)
        options = self.options
        self.speed = apply_speed_settings(pipe.transformer, options.cache, options.cache_threshold,
                                          options.compile_blocks, options.attention_backend)
        self.pipe, self.memory, self.adapters = pipe, plan, set()
        self.loads += 1
        self.on_loaded()

    def on_loaded(self) -> None:
        """Hook for families that derive sibling pipelines (sharing weights) from the loaded one."""

    def unload(self) -> None:
        self.pipe = None
        self.adapters = set()
        free_memory()

    def use_adapters(self, spec: RenderSpec, look: ShotLook) -> None:
        """The shot's characters' LoRAs active at their weights (each loaded once per run), no others."""
        if not look.loras:
            if self.adapters:
                self.pipe.disable_lora()
            return
        if not hasattr(self.pipe, "load_lora_weights"):
            raise NightshiftError(f"{spec.shot_id}: {type(self.pipe).__name__} takes no LoRA in diffusers",
                                  "remove the lora from character_looks for this family, or render with another")
        for adapter in look.loras:
            if adapter.name not in self.adapters:
                self.pipe.load_lora_weights(str(adapter.path), adapter_name=adapter.name)
                self.adapters.add(adapter.name)
        self.pipe.enable_lora()
        self.pipe.set_adapters([a.name for a in look.loras], adapter_weights=[a.weight for a in look.loras])

    # ------------------------------------------------------------------ rendering

    def generator(self, spec: RenderSpec) -> torch.Generator:
        # A CPU generator gives the same noise on every device and tier.
        return torch.Generator(device="cpu").manual_seed(spec.seed)

    def generate(self, spec: RenderSpec, keyframes: list[Keyframe]) -> VideoOutput:
        raise NotImplementedError

    def render(self, spec: RenderSpec, keyframes: list[Keyframe], look: ShotLook | None = None) -> RenderedVideo:
        """Render one shot (with its characters' look: reference images, LoRAs); on out-of-memory, free
        everything and retry at the next lower tier."""
        if spec.family != self.family:
            raise ValueError(f"{spec.shot_id}: spec is for {spec.family}, this backend renders {self.family}")
        self.ensure_loaded(spec)
        self.look = look or ShotLook()
        attempts: list[str] = []
        started = time.perf_counter()
        while True:
            assert self.memory is not None
            try:
                faults.reached("generate")
                self.use_adapters(spec, self.look)
                output = self.generate(spec, keyframes)
                if self.look.references and not any(c.startswith("reference") for c in output.conditioning):
                    output.notes.append(f"{type(self.pipe).__name__} takes no reference images in diffusers; the "
                                        "characters' references were not used (their LoRAs and descriptions were)")
                return RenderedVideo(output, self.memory.quantization, self.memory.tier, attempts, self.memory.reason,
                                     round(time.perf_counter() - started, 3))
            except Exception as error:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raise
                if not is_out_of_memory(error):
                    raise
                current = self.memory
                attempts.append(f"{current.quantization}/{current.tier}: out of memory")
                self.unload()
                remaining = lower_tiers(current.tier, self.device)
                if not remaining:
                    raise ShotOutOfMemory(spec.shot_id, attempts) from None
                self._load(MemoryPlan(current.quantization, remaining[0],
                                      f"retry after out of memory at {current.tier}"))

    # ------------------------------------------------------------------ helpers for family files

    @staticmethod
    def keyframe_at(keyframes: list[Keyframe], index: int) -> Keyframe | None:
        return next((k for k in keyframes if k.frame_index == index), None)

    @staticmethod
    def check_keyframes(spec: RenderSpec, keyframes: list[Keyframe]) -> None:
        for k in keyframes:
            if not 0 <= k.frame_index < spec.num_frames:
                raise ValueError(f"{spec.shot_id}: keyframe at frame {k.frame_index} is outside 0..{spec.num_frames - 1}")
            if k.image.size != (spec.width, spec.height):
                raise ValueError(f"{spec.shot_id}: keyframe {k.path.name} is {k.image.size[0]}x{k.image.size[1]}, "
                                 f"the shot renders at {spec.width}x{spec.height}")


def _transformer_class(folder: Path) -> str | None:
    """The transformer class a diffusers folder names (a VACE checkpoint's differs from its family's default)."""
    try:
        name = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError):
        return None
    return name if isinstance(name, str) and name.isidentifier() else None


def backend_class(family: str) -> type[DiffusersVideoBackend]:
    """The backend class for a family, imported from its own module."""
    entry = model_entry(family)
    module = importlib.import_module(entry.backend)
    return module.BACKEND
