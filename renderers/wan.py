"""Wan 2.2 through `WanPipeline` (text-to-video) and `WanImageToVideoPipeline` (first frame, or first and last).

Which one runs depends on the checkpoint and the shot: a text-to-video
checkpoint (T2V-A14B) ignores keyframes and says so; TI2V-5B takes a first
frame; image-to-video checkpoints (I2V-A14B) take a first and a last frame and
cannot run without a first. The sibling pipeline shares the loaded weights
(`from_pipe`), so switching between them loads nothing.
"""

from __future__ import annotations

from typing import Any

from nightshift.errors import NightshiftError
from nightshift.schemas import RenderSpec
from nightshift.renderers.video import DiffusersVideoBackend, Keyframe, VideoOutput, to_uint8_frames


class WanVideoBackend(DiffusersVideoBackend):
    family = "wan"
    pipeline_class = None  # WanPipeline or WanImageToVideoPipeline, as model_index.json says

    def on_loaded(self) -> None:
        from diffusers import WanImageToVideoPipeline, WanPipeline

        self.vace = type(self.pipe).__name__ == "WanVACEPipeline"
        if self.vace:  # a VACE checkpoint: text-to-video with the characters' reference images
            self.image_only = self.takes_image = self.expand_timesteps = False
            self.variants = {"WanVACEPipeline": self.pipe}
            return
        config = self.pipe.transformer.config
        z_dim = self.pipe.vae.config.z_dim
        self.expand_timesteps = bool(getattr(self.pipe.config, "expand_timesteps", False))
        self.image_only = config.in_channels == 2 * z_dim + 4 and not self.expand_timesteps
        self.takes_image = self.image_only or self.expand_timesteps
        self.variants: dict[str, Any] = {type(self.pipe).__name__: self.pipe}
        for cls in (WanPipeline, WanImageToVideoPipeline):
            if cls.__name__ not in self.variants:
                self.variants[cls.__name__] = cls.from_pipe(self.pipe)

    def generate(self, spec: RenderSpec, keyframes: list[Keyframe]) -> VideoOutput:
        self.check_keyframes(spec, keyframes)
        first = self.keyframe_at(keyframes, 0)
        last = self.keyframe_at(keyframes, spec.num_frames - 1)
        notes: list[str] = []
        common = dict(prompt=spec.prompt, negative_prompt=spec.negative_prompt or None, width=spec.width,
                      height=spec.height, num_frames=spec.num_frames, num_inference_steps=spec.steps,
                      guidance_scale=spec.guidance, generator=self.generator(spec), output_type="np")
        if self.vace:
            return self._vace(spec, keyframes, common)
        if self.image_only and first is None:
            raise NightshiftError(f"{spec.shot_id}: this Wan checkpoint is image-to-video and the shot has no first frame",
                                  "set render.keyframe_model (a local text-to-image model) or first_frame_image in the shot list")
        if first is not None and self.takes_image:
            kwargs: dict[str, Any] = {"image": first.image}
            used = [f"image@0 ({first.source})"]
            if last is not None and not self.expand_timesteps:
                kwargs["last_image"] = last.image
                used.append(f"image@{last.frame_index} ({last.source})")
            elif last is not None:
                notes.append("this checkpoint takes a first frame only; the last keyframe was not used")
            result = self.variants["WanImageToVideoPipeline"](**kwargs, **common)
            mode = "first/last frame" if "last_image" in kwargs else "image-to-video"
            return VideoOutput(to_uint8_frames(result.frames), pipeline=f"WanImageToVideoPipeline ({mode})",
                               conditioning=used, notes=notes)
        if keyframes:
            notes.append("this checkpoint is text-to-video; keyframes were not used")
        result = self.variants["WanPipeline"](**common)
        return VideoOutput(to_uint8_frames(result.frames), pipeline="WanPipeline (text-to-video)", notes=notes)

    def _vace(self, spec: RenderSpec, keyframes: list[Keyframe], common: dict[str, Any]) -> VideoOutput:
        references = self.look.references
        notes = ["this VACE render takes the characters' reference images; keyframes were not used"] if keyframes else []
        result = self.pipe(reference_images=references or None, **common)
        used = [f"reference {i + 1} ({path.name})" for i, path in enumerate(self.look.reference_paths)]
        return VideoOutput(to_uint8_frames(result.frames), pipeline="WanVACEPipeline (reference images)"
                           if references else "WanVACEPipeline (text-to-video)", conditioning=used, notes=notes)


BACKEND = WanVideoBackend
