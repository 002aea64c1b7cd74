"""LTX-2 through `LTX2ConditionPipeline`: text/image-to-video and keyframe conditioning, with its audio track.

LTX-2 generates sound with the picture; the waveform comes back beside the
frames and is muxed into the clip as AAC.
"""

from __future__ import annotations

import numpy as np
import torch

from nightshift.schemas import RenderSpec
from nightshift.renderers.video import DiffusersVideoBackend, Keyframe, VideoOutput, to_uint8_frames


class LTX2VideoBackend(DiffusersVideoBackend):
    family = "ltx2"
    pipeline_class = "LTX2ConditionPipeline"

    def generate(self, spec: RenderSpec, keyframes: list[Keyframe]) -> VideoOutput:
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

        self.check_keyframes(spec, keyframes)
        ordered = sorted(keyframes, key=lambda k: k.frame_index)
        conditions = [LTX2VideoCondition(frames=k.image, index=k.frame_index, strength=1.0) for k in ordered]
        result = self.pipe(
            conditions=conditions or None, prompt=spec.prompt, negative_prompt=spec.negative_prompt or None,
            width=spec.width, height=spec.height, num_frames=spec.num_frames, frame_rate=spec.fps,
            num_inference_steps=spec.steps, guidance_scale=spec.guidance, generator=self.generator(spec),
            output_type="np",
        )
        audio = result.audio
        if isinstance(audio, torch.Tensor):
            audio = audio.float().cpu().numpy()
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 3:
            audio = audio[0]
        mode = "keyframes" if len(conditions) > 1 else "image-to-video" if conditions else "text-to-video"
        return VideoOutput(to_uint8_frames(result.frames), audio=np.clip(audio, -1.0, 1.0),
                           sample_rate=int(self.pipe.vocoder.config.output_sampling_rate),
                           pipeline=f"LTX2ConditionPipeline ({mode})",
                           conditioning=[f"image@{k.frame_index} ({k.source})" for k in ordered])


BACKEND = LTX2VideoBackend
