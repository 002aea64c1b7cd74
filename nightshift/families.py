"""What each video model family needs from a render spec: frame-count and size rules, defaults.

The renderer registry (renderers/registry.py) adds pipeline classes and memory
estimates on top of these; planning only needs the rules, so they live in core.
"""

from __future__ import annotations

from dataclasses import dataclass

from nightshift.schemas import ModelFamily


@dataclass(frozen=True)
class FamilyRules:
    family: ModelFamily
    label: str
    default_model_id: str
    frame_step: int  # valid frame counts are frame_step * k + 1
    size_multiple: int
    width: int
    height: int
    fps: float
    min_frames: int
    max_frames: int
    steps: int
    guidance: float
    prompt_template: str
    negative_template: str
    makes_audio: bool = False
    # The draft rung (nightshift/ladder.py): steps and size fraction, each family at about a tenth of its final's
    # cost, still recognisably the shot (these models hold composition and motion at half size and few steps).
    draft_steps: int = 8
    draft_scale: float = 0.5

    def frame_count(self, duration_s: float, fps: float) -> int:
        """The valid frame count nearest to duration * fps, within the family's limits."""
        wanted = max(1.0, duration_s * fps)
        k = max(0, round((wanted - 1) / self.frame_step))
        frames = self.frame_step * k + 1
        return min(max(frames, self.min_frames), self.max_frames)

    def snap_size(self, width: int, height: int) -> tuple[int, int]:
        """Round each side to the nearest multiple the model accepts (never below one multiple)."""
        m = self.size_multiple
        return max(m, round(width / m) * m), max(m, round(height / m) * m)

    def valid_frame_count(self, frames: int) -> bool:
        return frames >= 1 and (frames - 1) % self.frame_step == 0

    def valid_size(self, width: int, height: int) -> bool:
        return width % self.size_multiple == 0 and height % self.size_multiple == 0


FAMILIES: dict[str, FamilyRules] = {
    "ltx": FamilyRules(
        family="ltx",
        label="LTX-Video",
        default_model_id="Lightricks/LTX-Video-0.9.5",
        frame_step=8,
        size_multiple=32,
        width=768,
        height=512,
        fps=24.0,
        min_frames=9,
        max_frames=257,
        steps=40,
        guidance=3.0,
        prompt_template="prompt_ltx.j2",
        negative_template="negative_ltx.j2",
    ),
    "ltx2": FamilyRules(
        family="ltx2",
        label="LTX-2",
        default_model_id="Lightricks/LTX-2",
        frame_step=8,
        size_multiple=32,
        width=768,
        height=512,
        fps=24.0,
        min_frames=9,
        max_frames=257,
        steps=40,
        guidance=4.0,
        prompt_template="prompt_ltx.j2",
        negative_template="negative_ltx.j2",
        makes_audio=True,
    ),
    "wan": FamilyRules(
        family="wan",
        label="Wan 2.2",
        default_model_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        frame_step=4,
        size_multiple=16,
        width=1280,
        height=704,
        fps=24.0,
        min_frames=5,
        max_frames=121,
        steps=50,
        draft_steps=12,
        guidance=5.0,
        prompt_template="prompt_wan.j2",
        negative_template="negative_wan.j2",
    ),
    "hunyuan": FamilyRules(
        family="hunyuan",
        label="HunyuanVideo 1.5",
        default_model_id="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
        frame_step=4,
        size_multiple=16,
        width=848,
        height=480,
        fps=24.0,
        min_frames=5,
        max_frames=121,
        steps=50,
        draft_steps=12,
        guidance=6.0,
        prompt_template="prompt_hunyuan.j2",
        negative_template="negative_hunyuan.j2",
    ),
}


def family_rules(family: str) -> FamilyRules:
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}") from None
