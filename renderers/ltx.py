"""LTX-Video through `LTXConditionPipeline`: text-to-video, image-to-video, keyframes at several frame indices.

One pipeline covers all three: no conditions is text-to-video, an image at
frame 0 is image-to-video, and images at other indices pin later frames (the
end frame of a shot, or any keyframe in between).
"""

from __future__ import annotations

from nightshift.schemas import RenderSpec
from renderers.video import DiffusersVideoBackend, Keyframe, VideoOutput, to_uint8_frames

TEMPORAL_COMPRESSION = 8  # LTX's VAE packs 8 frames into one latent frame


def snap_condition_index(index: int, num_frames: int) -> int:
    """Conditions land on latent frames: indices other than 0 must be multiples of 8."""
    if index == 0:
        return 0
    snapped = max(TEMPORAL_COMPRESSION, round(index / TEMPORAL_COMPRESSION) * TEMPORAL_COMPRESSION)
    return min(snapped, (num_frames - 1) // TEMPORAL_COMPRESSION * TEMPORAL_COMPRESSION)


class LTXVideoBackend(DiffusersVideoBackend):
    family = "ltx"
    pipeline_class = "LTXConditionPipeline"

    def generate(self, spec: RenderSpec, keyframes: list[Keyframe]) -> VideoOutput:
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        self.check_keyframes(spec, keyframes)
        conditions, used, notes = [], [], []
        for k in sorted(keyframes, key=lambda k: k.frame_index):
            index = snap_condition_index(k.frame_index, spec.num_frames)
            if index != k.frame_index:
                notes.append(f"keyframe at frame {k.frame_index} placed at {index} (LTX conditions sit on multiples of 8)")
            conditions.append(LTXVideoCondition(image=k.image, frame_index=index, strength=1.0))
            used.append(f"image@{index} ({k.source})")
        result = self.pipe(
            conditions=conditions or None, prompt=spec.prompt, negative_prompt=spec.negative_prompt or None,
            width=spec.width, height=spec.height, num_frames=spec.num_frames, frame_rate=round(spec.fps),
            num_inference_steps=spec.steps, guidance_scale=spec.guidance, generator=self.generator(spec),
            output_type="np",
        )
        mode = "keyframes" if len(conditions) > 1 else "image-to-video" if conditions else "text-to-video"
        return VideoOutput(to_uint8_frames(result.frames), pipeline=f"LTXConditionPipeline ({mode})",
                           conditioning=used, notes=notes)


BACKEND = LTXVideoBackend
