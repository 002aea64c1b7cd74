"""HunyuanVideo 1.5 through `HunyuanVideo15Pipeline` and `HunyuanVideo15ImageToVideoPipeline`.

The 1.5 checkpoints come as separate text-to-video and image-to-video repos;
which one is loaded decides what a shot can use. Guidance is set by the
checkpoint's guider component, so the spec's guidance is recorded but not passed.
"""

from __future__ import annotations

from nightshift.errors import NightshiftError
from nightshift.schemas import RenderSpec
from nightshift.renderers.video import DiffusersVideoBackend, Keyframe, VideoOutput, to_uint8_frames


class HunyuanVideoBackend(DiffusersVideoBackend):
    family = "hunyuan"
    pipeline_class = None  # the t2v or i2v class, as model_index.json says

    def generate(self, spec: RenderSpec, keyframes: list[Keyframe]) -> VideoOutput:
        self.check_keyframes(spec, keyframes)
        first = self.keyframe_at(keyframes, 0)
        image_to_video = type(self.pipe).__name__ == "HunyuanVideo15ImageToVideoPipeline"
        common = dict(prompt=spec.prompt, negative_prompt=spec.negative_prompt or None, num_frames=spec.num_frames,
                      num_inference_steps=spec.steps, generator=self.generator(spec), output_type="np")
        notes = ["guidance comes from the checkpoint's guider; the spec's guidance was not applied"]
        if image_to_video:
            if first is None:
                raise NightshiftError(f"{spec.shot_id}: the HunyuanVideo 1.5 i2v checkpoint needs a first frame",
                                      "set render.keyframe_model or first_frame_image, or use the t2v checkpoint")
            result = self.pipe(image=first.image, **common)
            return VideoOutput(to_uint8_frames(result.frames), pipeline="HunyuanVideo15ImageToVideoPipeline",
                               conditioning=[f"image@0 ({first.source})"], notes=notes)
        if keyframes:
            notes.append("the t2v checkpoint does not take keyframes; they were not used")
        result = self.pipe(height=spec.height, width=spec.width, **common)
        return VideoOutput(to_uint8_frames(result.frames), pipeline="HunyuanVideo15Pipeline", notes=notes)


BACKEND = HunyuanVideoBackend
