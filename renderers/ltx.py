"""LTX-Video through `LTXConditionPipeline`: text-to-video, image-to-video, keyframes at several frame indices.

One pipeline covers all three: no conditions is text-to-video, an image at
frame 0 is image-to-video, and images at other indices pin later frames (the
end frame of a shot, or any keyframe in between).

With a latent upsampler (`render.ltx_latent_upsampler`, e.g. Lightricks/ltxv-spatial-upscaler-0.9.7)
a shot renders in three passes, as Lightricks publish it: the video at half size, its latents
upsampled 2x by the upsampler, then a short refining pass at full size (denoise strength 0.4).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from nightshift.schemas import RenderSpec
from nightshift.renderers.video import BackendOptions, DiffusersVideoBackend, Keyframe, VideoOutput, to_uint8_frames
from nightshift.renderers.weights import resolve_weights

TEMPORAL_COMPRESSION = 8  # LTX's VAE packs 8 frames into one latent frame
REFINE_STRENGTH = 0.4  # the refining pass after the latent upsampler re-noises 40% of the schedule


def snap_condition_index(index: int, num_frames: int) -> int:
    """Conditions land on latent frames: indices other than 0 must be multiples of 8."""
    if index == 0:
        return 0
    snapped = max(TEMPORAL_COMPRESSION, round(index / TEMPORAL_COMPRESSION) * TEMPORAL_COMPRESSION)
    return min(snapped, (num_frames - 1) // TEMPORAL_COMPRESSION * TEMPORAL_COMPRESSION)


REFERENCE_STRENGTH = 0.5  # how strongly a character's reference image conditions the first frame


class LTXVideoBackend(DiffusersVideoBackend):
    family = "ltx"
    pipeline_class = "LTXConditionPipeline"

    def __init__(self, model_id: str, options: BackendOptions = BackendOptions()) -> None:
        super().__init__(model_id, options)
        # Resolved now, so a missing upsampler stops the run before any shot, like missing weights.
        self.upsampler_location = (resolve_weights(options.latent_upsampler, options.models_dir,
                                                   marker="config.json")
                                   if options.latent_upsampler else None)
        self.upsampler: Any = None

    def on_loaded(self) -> None:
        if self.upsampler_location is None:
            return
        from diffusers import LTXLatentUpsamplePipeline
        from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

        model = LTXLatentUpsamplerModel.from_pretrained(self.upsampler_location.path, dtype=self.dtype,
                                                        local_files_only=True).to(self.device)
        self.upsampler = LTXLatentUpsamplePipeline(vae=self.pipe.vae, latent_upsampler=model)
        self.upsampler.set_progress_bar_config(disable=True)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if self.upsampler_location is not None:
            described["latent_upsampler"] = str(self.upsampler_location.path)
        return described

    def _conditions(self, spec: RenderSpec, keyframes: list[Keyframe], size: tuple[int, int]) -> tuple[list, list[str], list[str]]:
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        conditions, used, notes = [], [], []
        for k in sorted(keyframes, key=lambda k: k.frame_index):
            index = snap_condition_index(k.frame_index, spec.num_frames)
            if index != k.frame_index:
                notes.append(f"keyframe at frame {k.frame_index} placed at {index} (LTX conditions sit on multiples of 8)")
            image = k.image if k.image.size == size else k.image.resize(size, Image.Resampling.LANCZOS)
            conditions.append(LTXVideoCondition(image=image, frame_index=index, strength=1.0))
            used.append(f"image@{index} ({k.source})")
        if self.look.references and not any(k.frame_index == 0 for k in keyframes):
            # A character's reference leans the first frame toward their look without fixing its composition.
            reference = self.look.references[0]
            image = reference if reference.size == size else reference.resize(size, Image.Resampling.LANCZOS)
            conditions.insert(0, LTXVideoCondition(image=image, frame_index=0, strength=REFERENCE_STRENGTH))
            used.insert(0, f"reference@0 (strength {REFERENCE_STRENGTH:g}, {self.look.reference_paths[0].name})")
        return conditions, used, notes

    def generate(self, spec: RenderSpec, keyframes: list[Keyframe]) -> VideoOutput:
        self.check_keyframes(spec, keyframes)
        if self.upsampler is not None:
            return self._generate_upsampled(spec, keyframes)
        conditions, used, notes = self._conditions(spec, keyframes, (spec.width, spec.height))
        result = self.pipe(
            conditions=conditions or None, prompt=spec.prompt, negative_prompt=spec.negative_prompt or None,
            width=spec.width, height=spec.height, num_frames=spec.num_frames, frame_rate=round(spec.fps),
            num_inference_steps=spec.steps, guidance_scale=spec.guidance, generator=self.generator(spec),
            output_type="np",
        )
        mode = "keyframes" if len(conditions) > 1 else "image-to-video" if conditions else "text-to-video"
        return VideoOutput(to_uint8_frames(result.frames), pipeline=f"LTXConditionPipeline ({mode})",
                           conditioning=used, notes=notes)

    def _generate_upsampled(self, spec: RenderSpec, keyframes: list[Keyframe]) -> VideoOutput:
        multiple = 2 * self.pipe.vae_spatial_compression_ratio  # the half size must still be a latent multiple
        low = (max(multiple, spec.width // multiple * multiple) // 2, max(multiple, spec.height // multiple * multiple) // 2)
        high = (2 * low[0], 2 * low[1])
        common = dict(prompt=spec.prompt, negative_prompt=spec.negative_prompt or None, num_frames=spec.num_frames,
                      frame_rate=round(spec.fps), num_inference_steps=spec.steps, guidance_scale=spec.guidance)
        conditions, used, notes = self._conditions(spec, keyframes, low)
        latents = self.pipe(conditions=conditions or None, width=low[0], height=low[1], generator=self.generator(spec),
                            output_type="latent", **common).frames
        upsampled = self.upsampler(latents=latents, adain_factor=1.0, output_type="latent").frames
        conditions, _, _ = self._conditions(spec, keyframes, high)
        result = self.pipe(conditions=conditions or None, width=high[0], height=high[1], latents=upsampled,
                           denoise_strength=REFINE_STRENGTH, decode_timestep=0.05, image_cond_noise_scale=0.025,
                           generator=self.generator(spec), output_type="np", **common)
        frames = to_uint8_frames(result.frames)
        if high != (spec.width, spec.height):
            notes.append(f"rendered at {high[0]}x{high[1]} (2x of {low[0]}x{low[1]}) and resized to {spec.width}x{spec.height}")
            frames = np.stack([np.asarray(Image.fromarray(f).resize((spec.width, spec.height), Image.Resampling.LANCZOS))
                               for f in frames])
        notes.append(f"latent upsampler: {low[0]}x{low[1]} -> {high[0]}x{high[1]}, refined at strength {REFINE_STRENGTH}")
        return VideoOutput(frames, pipeline="LTXConditionPipeline + LTXLatentUpsamplePipeline", conditioning=used,
                           notes=notes)


BACKEND = LTXVideoBackend
