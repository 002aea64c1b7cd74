"""The diffusers renderer: a video model per family (renderers/<family>.py), keyframes, model upscale, 4K finish.

Imports torch: only the render child process (nightshift/render_worker.py) and `nightshift reproduce`
load this module.
"""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field

import torch

from nightshift.machine import machine_name
from nightshift import faults
from nightshift.config import RenderDefaults
from nightshift.files import now_utc, sha256_file
from nightshift.renderers.encode import EncodeSettings, encode_frames
from nightshift.renderers.comfyui import ComfyUIShotRenderer
from nightshift.renderers.continuity import continuity_record, end_frame, keep_last_frame
from nightshift.renderers.keyframes import TextToImage, prepare_keyframes
from nightshift.renderers.looks import FileHashes, resolve_look
from nightshift.renderers.shots import AnimaticShotRenderer, RendererChoice, ShotJob, ShotRenderer, ClipFinish, finish_settings
from nightshift.renderers.upscale import UpscaleSettings
from nightshift.renderers.upscale_model import load_super_resolution
from nightshift.renderers.video import BackendOptions, backend_class
from nightshift.schemas import ClipRecord, RenderSpec, spec_sha256


@dataclass
class DiffusersShotRenderer:
    """One diffusers backend per model id, loaded on first use and kept for the whole run."""

    settings: RenderDefaults
    device: str
    upscale: UpscaleSettings = field(default_factory=UpscaleSettings)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    name: str = "diffusers"

    def __post_init__(self) -> None:
        model_path = self.settings.upscale_model  # loaded once per run, before any shot
        model = load_super_resolution(model_path, self.device, self.settings.upscale_tile) if model_path else None
        self.finish = ClipFinish(self.upscale, self.encode, model, model_path, self.settings.upscale_tile)
        self.options = BackendOptions(device=self.device, quantization=self.settings.quantization,
                                      tier=self.settings.tier, gguf_file=self.settings.gguf_file,
                                      models_dir=self.settings.models_dir,
                                      latent_upsampler=self.settings.ltx_latent_upsampler,
                                      cache=self.settings.cache, cache_threshold=self.settings.cache_threshold,
                                      compile_blocks=self.settings.compile_blocks,
                                      attention_backend=self.settings.attention_backend)
        self.backends: dict[str, object] = {}
        self.file_hashes: FileHashes = {}  # characters' references and LoRAs, hashed once per run
        self.text_to_image = (TextToImage(self.settings.keyframe_model, self.device, self.settings.models_dir,
                                          self.settings.keyframe_steps, self.settings.keyframe_guidance)
                              if self.settings.keyframe_model else None)

    def backend_for(self, spec: RenderSpec):
        key = f"{spec.family}:{spec.model_id}"
        if key not in self.backends:
            self.backends[key] = backend_class(spec.family)(spec.model_id, self.options)
        return self.backends[key]

    def render(self, job: ShotJob) -> ClipRecord:
        spec, started, loading = job.spec, now_utc(), time.perf_counter()
        faults.reached("render")
        backend = self.backend_for(spec)
        # Loading the pipeline (the first shot of a run) is not the shot's render time: forecasts learn from it.
        loaded_s, t0 = time.perf_counter() - loading, time.perf_counter()
        loaded = [f"the pipeline was loaded first, in {loaded_s:.1f} s (not in seconds)"] if loaded_s >= 0.5 else []
        keyframes, notes = prepare_keyframes(spec, job.plan_folder, job.keyframes_dir, self.text_to_image)
        continuity = continuity_record(spec, job.keyframes_dir)
        look = resolve_look(spec, job.plan_folder)
        rendered = backend.render(spec, keyframes, look)
        out = rendered.output
        native = job.work_dir / f"{spec.shot_id}.native.mp4"
        frames = encode_frames(keep_last_frame(iter(out.frames), end_frame(job.keyframes_dir, spec.shot_id)), native,
                               spec.fps, self.encode, audio=out.audio, sample_rate=out.sample_rate)
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
            finished=now_utc(), seconds=round(time.perf_counter() - t0, 3), rendered_on=machine_name(), notes=notes + out.notes + loaded,
            speed=backend.speed, look=look.record(job.plan_folder, self.file_hashes), **continuity,
        )


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return (f"{device} ({torch.cuda.get_device_name(index)}, CUDA {torch.version.cuda}, "
                f"driver {_nvidia_driver() or 'unknown'})")
    return f"cpu ({platform.machine()}, torch {torch.__version__})"


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version, for the provenance record (torch does not expose it)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def make_renderer(choice: RendererChoice, settings: RenderDefaults) -> ShotRenderer:
    upscale, encode = finish_settings(settings)
    if choice.kind == "animatic":
        return AnimaticShotRenderer(upscale, encode)
    if choice.kind == "comfyui":
        return ComfyUIShotRenderer(settings, upscale, encode)
    return DiffusersShotRenderer(settings, choice.device, upscale, encode)
