"""Rendering one shot: the animatic or a diffusers backend -> native clip -> 4K upscale -> shots/<id>.mp4.

`choose_renderer` decides which backend a run uses and says why; a
`ShotRenderer` keeps its model loaded across every shot of the run.
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from nightshift import faults
from nightshift.config import RenderDefaults
from nightshift.schemas import RenderPlan, RenderSpec, Shot
from nightshift.renderers.encode import EncodeSettings, encode_frames
from nightshift.renderers.upscale import UpscaleSettings, upscale_to_4k


class ClipRecord(BaseModel):
    """What was rendered for one shot, how, and where it went."""

    shot_id: str
    backend: str
    animatic: bool
    model_id: str | None
    weights: str | None = None
    weights_revision: str | None = None
    pipeline: str | None = None
    quantization: str = "none"
    tier: str
    attempts: list[str] = Field(default_factory=list, description="Tiers that ran out of memory before `tier`.")
    memory_reason: str | None = None
    device: str
    seed: int | None = None
    steps: int | None = None
    width: int
    height: int
    fps: float
    frames: int
    audio: bool = False
    conditioning: list[str] = Field(default_factory=list)
    keyframes: list[str] = Field(default_factory=list)
    upscaled_to: str
    encoded_as: str | None = None
    upscale_settings: dict[str, object] = Field(default_factory=dict, description="What `nightshift reproduce` uses.")
    encode_settings: dict[str, object] = Field(default_factory=dict)
    keyframe_settings: dict[str, object] = Field(default_factory=dict, description="The text-to-image model, steps, guidance.")
    scheduler: str | None = None
    file: str
    sha256: str = Field(description="The clip as delivered (after signing, its Content Credentials included).")
    rendered_sha256: str | None = Field(None, description="The clip as rendered, before signing.")
    spec_sha256: str | None = None
    started: str
    finished: str
    seconds: float
    notes: list[str] = Field(default_factory=list)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spec_sha256(spec: RenderSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ShotJob:
    shot: Shot
    spec: RenderSpec
    plan_folder: Path  # where the shot list lives (user keyframe images are relative to it)
    shots_dir: Path
    keyframes_dir: Path
    work_dir: Path


@dataclass(frozen=True)
class RendererChoice:
    kind: Literal["animatic", "diffusers"]
    device: str
    reason: str


class ShotRenderer(Protocol):
    name: str

    def render(self, job: ShotJob) -> ClipRecord: ...


def resolve_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        from nightshift.errors import NightshiftError

        raise NightshiftError(f"render.device is {setting} but no CUDA GPU is visible",
                              "set render.device = \"cpu\" or use --renderer animatic")
    return setting


def choose_renderer(requested: str, plan: RenderPlan, settings: RenderDefaults) -> RendererChoice:
    """`auto`: diffusers when CUDA and the plan's weights are present, else the animatic; always with a reason."""
    from nightshift.renderers.weights import resolve_weights, weights_present

    model_ids = sorted({spec.model_id for spec in plan.specs})
    if requested == "animatic":
        return RendererChoice("animatic", "cpu", "--renderer animatic was asked for")
    if requested == "diffusers":
        device = resolve_device(settings.device)
        for model_id in model_ids:
            resolve_weights(model_id, settings.models_dir)  # raises with the download command
        slow = " (on CPU: expect minutes per frame at real model sizes)" if device == "cpu" else ""
        return RendererChoice("diffusers", device, f"--renderer diffusers on {device}{slow}")
    import torch

    if settings.device == "cpu" or not torch.cuda.is_available():
        return RendererChoice("animatic", "cpu", "no CUDA GPU on this machine, so storyboard cards instead of video")
    for model_id in model_ids:
        present, why = weights_present(model_id, settings.models_dir)
        if not present:
            return RendererChoice("animatic", "cpu", f"weights missing: {why}")
    device = resolve_device(settings.device)
    return RendererChoice("diffusers", device, f"CUDA GPU found and {', '.join(model_ids)} is on this machine")


@dataclass
class _Finish:
    upscale: UpscaleSettings
    encode: EncodeSettings
    model_path: Path | None = None  # a super-resolution weights file, loaded once per run, before any shot
    device: str = "cpu"
    tile: int = 512

    def __post_init__(self) -> None:
        from nightshift.renderers.upscale_model import load_super_resolution

        self.model = load_super_resolution(self.model_path, self.device, self.tile) if self.model_path else None

    def native_to_4k(self, job: ShotJob, native: Path) -> Path:
        final = job.shots_dir / f"{job.spec.shot_id}.mp4"
        try:
            upscale_to_4k(native, final, self.upscale, self.encode, self.model)
        finally:  # also on failure: a retry renders again, and a full disk needs the space back
            native.unlink(missing_ok=True)
        return final

    def settings_record(self) -> dict[str, object]:
        return {**asdict(self.upscale), "model": str(self.model_path) if self.model_path else None, "tile": self.tile}

    def describe(self) -> str:
        model = f"{self.model.describe()} then " if self.model is not None else ""
        return model + f"{self.upscale.width}x{self.upscale.height} {self.upscale.scaler} {self.upscale.fit}" + (
            f" cas {self.upscale.sharpen:g}" if self.upscale.sharpen else "")


class AnimaticShotRenderer:
    name = "animatic"

    def __init__(self, upscale: UpscaleSettings = UpscaleSettings(), encode: EncodeSettings = EncodeSettings()) -> None:
        self.finish = _Finish(upscale, encode)

    def render(self, job: ShotJob) -> ClipRecord:
        from nightshift.renderers.animatic import AnimaticRenderer

        spec, started, t0 = job.spec, now_utc(), time.perf_counter()
        faults.reached("render")
        native = job.work_dir / f"{spec.shot_id}.native.mp4"
        frames = encode_frames(AnimaticRenderer().frames(job.shot, spec), native, spec.fps, self.finish.encode)
        final = self.finish.native_to_4k(job, native)
        return ClipRecord(
            shot_id=spec.shot_id, backend=self.name, animatic=True, model_id=None, tier="none (animatic)",
            device=f"cpu ({platform.machine()})", width=self.finish.upscale.width, height=self.finish.upscale.height,
            fps=spec.fps, frames=frames, upscaled_to=self.finish.describe(), encoded_as=self.finish.encode.describe(),
            upscale_settings=self.finish.settings_record(), encode_settings=asdict(self.finish.encode),
            file=f"shots/{final.name}", sha256=(digest := sha256_file(final)), rendered_sha256=digest,
            spec_sha256=spec_sha256(spec), started=started, finished=now_utc(),
            seconds=round(time.perf_counter() - t0, 3),
            notes=["animatic: storyboard cards with the camera move simulated, not a video-model render"],
        )


@dataclass
class DiffusersShotRenderer:
    """One diffusers backend per model id, loaded on first use and kept for the whole run."""

    settings: RenderDefaults
    device: str
    upscale: UpscaleSettings = field(default_factory=UpscaleSettings)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    name: str = "diffusers"

    def __post_init__(self) -> None:
        from nightshift.renderers.keyframes import TextToImage
        from nightshift.renderers.video import BackendOptions

        self.finish = _Finish(self.upscale, self.encode, self.settings.upscale_model, self.device,
                              self.settings.upscale_tile)
        self.options = BackendOptions(device=self.device, quantization=self.settings.quantization,
                                      tier=self.settings.tier, gguf_file=self.settings.gguf_file,
                                      models_dir=self.settings.models_dir,
                                      latent_upsampler=self.settings.ltx_latent_upsampler)
        self.backends: dict[str, object] = {}
        self.text_to_image = (TextToImage(self.settings.keyframe_model, self.device, self.settings.models_dir,
                                          self.settings.keyframe_steps, self.settings.keyframe_guidance)
                              if self.settings.keyframe_model else None)

    def backend_for(self, spec: RenderSpec):
        from nightshift.renderers.video import backend_class

        key = f"{spec.family}:{spec.model_id}"
        if key not in self.backends:
            self.backends[key] = backend_class(spec.family)(spec.model_id, self.options)
        return self.backends[key]

    def render(self, job: ShotJob) -> ClipRecord:
        from nightshift.renderers.keyframes import prepare_keyframes

        spec, started, t0 = job.spec, now_utc(), time.perf_counter()
        faults.reached("render")
        backend = self.backend_for(spec)
        keyframes, notes = prepare_keyframes(spec, job.plan_folder, job.keyframes_dir, self.text_to_image)
        rendered = backend.render(spec, keyframes)
        out = rendered.output
        native = job.work_dir / f"{spec.shot_id}.native.mp4"
        frames = encode_frames(iter(out.frames), native, spec.fps, self.encode, audio=out.audio,
                               sample_rate=out.sample_rate)
        final = self.finish.native_to_4k(job, native)
        described = backend.describe()
        return ClipRecord(
            shot_id=spec.shot_id, backend=f"diffusers:{spec.family}", animatic=False, model_id=spec.model_id,
            weights=described["weights"], weights_revision=described["revision"], pipeline=out.pipeline,
            quantization=rendered.quantization, tier=rendered.tier, attempts=rendered.attempts,
            memory_reason=rendered.memory_reason, device=_device_name(self.device), seed=spec.seed, steps=spec.steps,
            width=self.upscale.width, height=self.upscale.height, fps=spec.fps, frames=frames,
            audio=out.audio is not None, conditioning=out.conditioning,
            keyframes=[f"keyframes/{k.path.name}" for k in keyframes], upscaled_to=self.finish.describe(),
            encoded_as=self.encode.describe(), scheduler=type(backend.pipe.scheduler).__name__,
            upscale_settings=self.finish.settings_record(), encode_settings=asdict(self.encode),
            keyframe_settings={"model": self.settings.keyframe_model, "steps": self.settings.keyframe_steps,
                               "guidance": self.settings.keyframe_guidance} if self.settings.keyframe_model else {},
            file=f"shots/{final.name}", sha256=(digest := sha256_file(final)), rendered_sha256=digest,
            spec_sha256=spec_sha256(spec), started=started,
            finished=now_utc(), seconds=round(time.perf_counter() - t0, 3), notes=notes + out.notes,
        )


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return (f"{device} ({torch.cuda.get_device_name(index)}, CUDA {torch.version.cuda}, "
                f"driver {_nvidia_driver() or 'unknown'})")
    return f"cpu ({platform.machine()}, torch {torch.__version__})"


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version, for the provenance record (torch does not expose it)."""
    import subprocess

    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def make_renderer(choice: RendererChoice, settings: RenderDefaults) -> ShotRenderer:
    upscale = UpscaleSettings(width=settings.output_width, height=settings.output_height, fit=settings.upscale_fit,
                              sharpen=settings.upscale_sharpen)
    encode = EncodeSettings(codec=settings.codec, crf=settings.crf, preset=settings.preset)
    if choice.kind == "animatic":
        return AnimaticShotRenderer(upscale, encode)
    return DiffusersShotRenderer(settings, choice.device, upscale, encode)
