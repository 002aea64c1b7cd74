"""`nightshift reproduce OUTPUT_DIR --shot ID`: render one shot again from its manifest alone.

The spec, seed, model (its recorded weights folder when still present), quantization, memory
tier, speed settings, device kind, upscale and encode settings all come from manifest.json; nothing from the
current configuration changes the result. The new clip goes into a new folder and is compared
with the delivered one: identical when its sha256 equals the recorded render's (before
signing), else how close, as PSNR over the decoded frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from nightshift.config import RenderDefaults
from nightshift.delivery import read_manifest
from nightshift.errors import NightshiftError
from nightshift.plan_files import load_plan_folder
from nightshift.renderers.comfyui import ComfyUIShotRenderer
from nightshift.renderers.diffusers_shot import DiffusersShotRenderer
from nightshift.renderers.shots import AnimaticShotRenderer, ShotJob
from nightshift.schemas import MEMORY_TIERS, ClipRecord
from nightshift.renderers.encode import EncodeSettings
from nightshift.renderers.upscale import UpscaleSettings



@dataclass(frozen=True)
class ReproduceReport:
    shot_id: str
    clip: Path
    identical: bool
    psnr_db: float | None  # None when identical; inf when every frame matches but the files differ
    frames: tuple[int, int]  # (delivered, reproduced)
    record: ClipRecord

    def text(self) -> str:
        if self.identical:
            return f"{self.shot_id}: identical: {self.clip} has the recorded sha256 {self.record.rendered_sha256}"
        closeness = "every decoded frame equal" if self.psnr_db == math.inf else f"PSNR {self.psnr_db:.2f} dB"
        return (f"{self.shot_id}: not bit-identical ({closeness} over {min(self.frames)} frames; "
                f"delivered {self.frames[0]} frames, reproduced {self.frames[1]}): {self.clip}")


def _renderer(clip: ClipRecord, base: RenderDefaults) -> AnimaticShotRenderer | DiffusersShotRenderer | ComfyUIShotRenderer:
    upscale_record = dict(clip.upscale_settings)
    model, tile = upscale_record.pop("model", None), upscale_record.pop("tile", 512)
    upscale = UpscaleSettings(**upscale_record) if upscale_record else UpscaleSettings()
    encode = EncodeSettings(**clip.encode_settings) if clip.encode_settings else EncodeSettings()
    if clip.animatic:
        return AnimaticShotRenderer(upscale, encode)
    if clip.comfyui:  # the recorded graph, to the server that rendered it (or render.comfyui.url when it moved)
        server = str(clip.comfyui.get("server") or base.comfyui.urls()[0])
        comfyui = base.comfyui.model_copy(update={"url": [server, *[u for u in base.comfyui.urls() if u != server]]})
        return ComfyUIShotRenderer(base.model_copy(update={"comfyui": comfyui}), upscale, encode, recorded=clip.comfyui)
    device = clip.device.split()[0]
    settings = base.model_copy(update={
        "quantization": clip.quantization, "tier": clip.tier if clip.tier in MEMORY_TIERS else "auto", "device": device,
        "upscale_model": Path(model) if model else None, "upscale_tile": tile,
        "keyframe_model": clip.keyframe_settings.get("model"),
        "keyframe_steps": clip.keyframe_settings.get("steps", base.keyframe_steps),
        "keyframe_guidance": clip.keyframe_settings.get("guidance", base.keyframe_guidance),
        # the speed settings it ran with (a step cache changes pixels); none recorded: none used
        "cache": clip.speed.get("cache", "none"),
        "cache_threshold": clip.speed.get("cache_config", {}).get("threshold", base.cache_threshold),
        "compile_blocks": bool(clip.speed.get("compile_repeated_blocks", False)),
        "attention_backend": clip.speed.get("attention_backend", "native")})
    return DiffusersShotRenderer(settings, device, upscale, encode)


def _frames(path: Path):  # noqa: ANN202 - a generator of uint8 arrays
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def psnr(first: Path, second: Path) -> tuple[float, int, int]:
    """PSNR in dB over the frames both clips have, streamed; and each clip's frame count."""
    squared, samples, count_a, count_b = 0.0, 0, 0, 0
    a_frames, b_frames = _frames(first), _frames(second)
    while True:
        a, b = next(a_frames, None), next(b_frames, None)
        count_a, count_b = count_a + (a is not None), count_b + (b is not None)
        if a is None or b is None:
            break
        difference = a.astype(np.float64) - b.astype(np.float64)
        squared, samples = squared + float(np.sum(difference * difference)), samples + difference.size
    for _ in a_frames:
        count_a += 1
    for _ in b_frames:
        count_b += 1
    if samples == 0:
        return 0.0, count_a, count_b
    mse = squared / samples
    return (math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)), count_a, count_b


def reproduce_shot(folder: Path, shot_id: str, out_dir: Path, base: RenderDefaults) -> ReproduceReport:
    manifest = read_manifest(folder)
    found = next((s for s in manifest.shots if s.spec.shot_id == shot_id), None)
    if found is None:
        ids = ", ".join(s.spec.shot_id for s in manifest.shots[:5])
        raise NightshiftError(f"{folder}: the manifest has no shot {shot_id}", f"shots here: {ids} ...")
    spec, clip = found.spec, found.clip
    if not clip.animatic and clip.weights and Path(clip.weights).is_dir():
        spec = spec.model_copy(update={"model_id": clip.weights})  # the very folder it was rendered from
    shotlist, _ = load_plan_folder(folder)
    shot = next(s for s in shotlist.shots if s.id == shot_id)
    if out_dir.resolve() == folder.resolve():
        raise NightshiftError("reproduce writes to a new folder, never into the delivery", "give --out another folder")
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    # Keyframe images the user supplied are read from the delivery; generated ones are made again.
    job = ShotJob(shot, spec, folder, out_dir / "shots", out_dir / "keyframes", work)
    record = _renderer(clip, base).render(job)
    if not any(work.iterdir()):
        work.rmdir()
    new_clip = out_dir / record.file
    if record.rendered_sha256 == clip.rendered_sha256:
        return ReproduceReport(shot_id, new_clip, True, None, (clip.frames, record.frames), record)
    value, delivered, reproduced = psnr(folder / clip.file, new_clip)
    return ReproduceReport(shot_id, new_clip, False, value, (delivered, reproduced), record)
