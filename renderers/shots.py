"""One shot, the parts every renderer shares: the work order, which renderer runs and why, the animatic,
and the finish (4K upscale and encode) that every backend's native clip goes through.

`choose_renderer` decides which backend a run uses and says why. The diffusers renderer
(renderers/diffusers_shot.py) imports torch; nothing here does at import time.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol

from nightshift.machine import machine_name
from nightshift import faults
from nightshift.config import RenderDefaults
from nightshift.errors import NightshiftError
from nightshift.files import now_utc, sha256_file
from nightshift.plan_files import load_plan_folder
from nightshift.renderers.animatic import AnimaticRenderer
from nightshift.renderers.continuity import continuity_record, end_frame, keep_last_frame
from nightshift.renderers.encode import EncodeSettings, encode_frames
from nightshift.renderers.upscale import UpscaleSettings, upscale_to_4k
from nightshift.renderers.weights import resolve_weights, weights_present
from nightshift.schemas import ClipRecord, RenderPlan, RenderSpec, Shot, spec_sha256


@dataclass(frozen=True)
class ShotJob:
    shot: Shot
    spec: RenderSpec
    plan_folder: Path  # where the shot list lives (user keyframe images are relative to it)
    shots_dir: Path
    keyframes_dir: Path
    work_dir: Path
    heading: str = ""  # the shot's scene heading, for the animatic


@dataclass(frozen=True)
class RendererChoice:
    kind: Literal["animatic", "diffusers", "comfyui"]
    device: str
    reason: str


class ShotRenderer(Protocol):
    name: str
    finish: ClipFinish  # how its native clip becomes the delivered one (a draft rung swaps in a cheaper one)

    def render(self, job: ShotJob) -> ClipRecord: ...


def resolve_device(setting: str) -> str:
    import torch  # heavy (seconds): only when a device is resolved, never for planning or the queue

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise NightshiftError(f"render.device is {setting} but no CUDA GPU is visible",
                              "set render.device = \"cpu\" or use --renderer animatic")
    return setting


def choose_renderer(requested: str, plan: RenderPlan, settings: RenderDefaults) -> RendererChoice:
    """`auto`: diffusers when CUDA and the plan's weights are present, else the animatic; always with a reason."""
    model_ids = sorted({spec.model_id for spec in plan.specs})
    if requested == "animatic":
        return RendererChoice("animatic", "cpu", "--renderer animatic was asked for")
    if requested == "comfyui":
        return RendererChoice("comfyui", "comfyui", f"ComfyUI at {', '.join(settings.comfyui.urls())}")
    if requested == "diffusers":
        device = resolve_device(settings.device)
        for model_id in model_ids:
            resolve_weights(model_id, settings.models_dir)  # raises with the download command
        slow = " (on CPU: expect minutes per frame at real model sizes)" if device == "cpu" else ""
        return RendererChoice("diffusers", device, f"--renderer diffusers on {device}{slow}")
    import torch  # heavy: see resolve_device

    if settings.device == "cpu" or not torch.cuda.is_available():
        return RendererChoice("animatic", "cpu", "no CUDA GPU on this machine, so storyboard cards instead of video")
    for model_id in model_ids:
        present, why = weights_present(model_id, settings.models_dir)
        if not present:
            return RendererChoice("animatic", "cpu", f"weights missing: {why}")
    device = resolve_device(settings.device)
    return RendererChoice("diffusers", device, f"CUDA GPU found and {', '.join(model_ids)} is on this machine")


@dataclass
class ClipFinish:
    """What every backend's native clip goes through: an optional model upscale, the 4K fit, the encode."""

    upscale: UpscaleSettings
    encode: EncodeSettings
    model: Any = None  # a loaded super-resolution network (renderers/upscale_model.py), run before the 4K fit
    model_path: Path | None = None
    tile: int = 512

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
        self.finish = ClipFinish(upscale, encode)

    def render(self, job: ShotJob) -> ClipRecord:
        spec, started, t0 = job.spec, now_utc(), time.perf_counter()
        faults.reached("render")
        native = job.work_dir / f"{spec.shot_id}.native.mp4"
        aspect = Fraction(self.finish.upscale.width, self.finish.upscale.height)  # drawn at the delivery's aspect
        continuity = continuity_record(spec, job.keyframes_dir)  # drawn, not conditioned, but kept in order
        frames = encode_frames(keep_last_frame(AnimaticRenderer().frames(job.shot, spec, job.heading, aspect),
                                               end_frame(job.keyframes_dir, spec.shot_id)), native, spec.fps,
                               self.finish.encode)
        final = self.finish.native_to_4k(job, native)
        return ClipRecord(
            shot_id=spec.shot_id, backend=self.name, animatic=True, model_id=None, tier="none (animatic)",
            device=f"cpu ({platform.machine()})", width=self.finish.upscale.width, height=self.finish.upscale.height,
            fps=spec.fps, frames=frames, upscaled_to=self.finish.describe(), encoded_as=self.finish.encode.describe(),
            upscale_settings=self.finish.settings_record(), encode_settings=asdict(self.finish.encode),
            file=f"shots/{final.name}", sha256=(digest := sha256_file(final)), rendered_sha256=digest,
            spec_sha256=spec_sha256(spec), started=started, finished=now_utc(),
            seconds=round(time.perf_counter() - t0, 3),
            rendered_on=machine_name(), notes=["animatic: storyboard cards with the camera move simulated, not a video-model render"],
            **continuity,
        )




def shot_job(plan_folder: Path, out_folder: Path, shot_id: str) -> ShotJob:
    """The work order for one shot of a plan folder, writing into out_folder/shots and keyframes."""
    shotlist, plan = load_plan_folder(plan_folder)
    shot = next((s for s in shotlist.shots if s.id == shot_id), None)
    spec = next((s for s in plan.specs if s.shot_id == shot_id), None)
    if shot is None or spec is None:
        raise NightshiftError(f"{plan_folder}: no shot {shot_id} in this plan", "see shotlist.md for the shot ids")
    (out_folder / ".work").mkdir(parents=True, exist_ok=True)
    heading = next((scene.heading for scene in shotlist.scenes if scene.number == shot.scene), "")
    return ShotJob(shot, spec, plan_folder, out_folder / "shots", out_folder / "keyframes", out_folder / ".work",
                   heading)


def finish_settings(settings: RenderDefaults) -> tuple[UpscaleSettings, EncodeSettings]:
    upscale = UpscaleSettings(width=settings.output_width, height=settings.output_height, fit=settings.upscale_fit,
                              sharpen=settings.upscale_sharpen, scaler=settings.upscale_scaler)
    return upscale, EncodeSettings(codec=settings.codec, crf=settings.crf, preset=settings.preset,
                                     keyframe_interval_s=settings.keyframe_interval_s)
