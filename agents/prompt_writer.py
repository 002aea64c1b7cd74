"""Shots -> RenderSpecs: prompts from templates, plus each family's frame and size rules."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nightshift.config import RenderDefaults
from nightshift.families import FamilyRules, family_rules
from nightshift.schemas import CameraMove, Framing, KeyframeSpec, LoraSpec, RenderPlan, RenderSpec, Shot, ShotList
from nightshift.templating import TemplateSet

_FRAMING_PHRASES = {
    Framing.extreme_wide: "Extreme wide shot",
    Framing.wide: "Wide establishing shot",
    Framing.full: "Full shot",
    Framing.medium_wide: "Medium wide shot",
    Framing.medium: "Medium shot",
    Framing.medium_close: "Medium close-up",
    Framing.close: "Close-up",
    Framing.extreme_close: "Extreme close-up",
    Framing.two_shot: "Two-shot",
    Framing.over_the_shoulder: "Over-the-shoulder shot",
    Framing.pov: "Point-of-view shot",
    Framing.insert: "Insert shot",
    Framing.aerial: "Aerial shot",
}
_CAMERA_PHRASES = {
    CameraMove.static: "the camera holds still on a tripod",
    CameraMove.pan_left: "the camera pans slowly left",
    CameraMove.pan_right: "the camera pans slowly right",
    CameraMove.tilt_up: "the camera tilts up",
    CameraMove.tilt_down: "the camera tilts down",
    CameraMove.push_in: "the camera pushes in slowly",
    CameraMove.pull_out: "the camera pulls back slowly",
    CameraMove.dolly: "the camera dollies alongside",
    CameraMove.tracking: "the camera tracks with the subject",
    CameraMove.crane_up: "the camera cranes up",
    CameraMove.crane_down: "the camera cranes down",
    CameraMove.handheld: "handheld camera with slight natural shake",
    CameraMove.orbit: "the camera orbits the subject",
    CameraMove.drone: "a drone camera glides overhead",
}


def shot_seed(base_seed: int, shot_id: str) -> int:
    """A seed per shot that depends only on the base seed and the id, so editing one shot changes no other."""
    digest = hashlib.sha256(f"{base_seed}:{shot_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass
class PromptWriter:
    templates: TemplateSet
    defaults: RenderDefaults

    @property
    def rules(self) -> FamilyRules:
        return family_rules(self.defaults.family)

    def _variables(self, shot: Shot, shotlist: ShotList) -> dict[str, object]:
        characters = [
            {"name": name, "description": shotlist.character_bible[name]}
            for name in shot.characters
            if shotlist.character_bible.get(name)
        ]
        settings = {scene.number: scene.setting for scene in shotlist.scenes}
        return {
            "shot": shot.model_dump(mode="json"),
            "characters": characters,
            "setting": settings.get(shot.scene) or "as described",
            "framing_phrase": _FRAMING_PHRASES[shot.framing],
            "camera_phrase": _CAMERA_PHRASES[shot.camera_move],
            "style": shotlist.style_bible or self.defaults.style,
            "family": self.rules.family,
        }

    def keyframes(self, shot: Shot, num_frames: int, variables: dict[str, object],
                  previous: Shot | None = None) -> list[KeyframeSpec]:
        """The first and last frames; a shot that continues the previous one of its scene starts on the frame
        that shot ended on (unless the user gave a first frame)."""
        frames = []
        carried = previous.id if shot.continues and previous is not None and previous.scene == shot.scene else None
        for index, image, description in (
            (0, shot.first_frame_image, shot.first_frame),
            (num_frames - 1, shot.last_frame_image, shot.last_frame),
        ):
            prompt = self.templates.render_line("keyframe.j2", frame=description, **variables)
            frames.append(KeyframeSpec(frame_index=index, prompt=prompt, image_path=image,
                                       from_shot=carried if index == 0 and image is None else None))
        return frames

    def render_spec(self, shot: Shot, shotlist: ShotList) -> RenderSpec:
        rules = self.rules
        d = self.defaults
        fps = d.fps or rules.fps
        width, height = rules.snap_size(d.width or rules.width, d.height or rules.height)
        num_frames = rules.frame_count(shot.duration_s, fps)
        notes = []
        if (d.width or rules.width, d.height or rules.height) != (width, height):
            notes.append(f"size snapped to {width}x{height} ({rules.label} needs multiples of {rules.size_multiple})")
        if num_frames / fps + 0.5 / fps < shot.duration_s - 1 / fps:
            notes.append(f"{shot.duration_s:g}s asked; {rules.label} renders at most {rules.max_frames} frames ({num_frames / fps:.2f}s)")
        variables = self._variables(shot, shotlist)
        looks = {name: shotlist.character_looks[name] for name in shot.characters if name in shotlist.character_looks}
        triggers = [look.lora.trigger for look in looks.values() if look.lora is not None and look.lora.trigger]
        prompt = shot.prompt or self.templates.render_line(rules.prompt_template, **variables)
        return RenderSpec(
            shot_id=shot.id,
            family=rules.family,
            model_id=d.model_id or rules.default_model_id,
            prompt=", ".join([*triggers, prompt]),
            negative_prompt=self.templates.render_line(rules.negative_template, **variables),
            keyframes=self.keyframes(shot, num_frames, variables, _previous(shot, shotlist)),
            seed=shot_seed(d.seed, shot.id if shot.take == 1 else f"{shot.id}/take{shot.take}"),
            width=width,
            height=height,
            fps=fps,
            num_frames=num_frames,
            steps=d.steps or rules.steps,
            guidance=d.guidance if d.guidance is not None else rules.guidance,
            duration_s=shot.duration_s,
            transition=shot.transition,
            notes=notes,
            references=[image for look in looks.values() for image in look.images],
            loras=[LoraSpec(name=_adapter_name(name), path=look.lora.path, weight=look.lora.weight)
                   for name, look in looks.items() if look.lora is not None],
        )

    def template_hashes(self) -> dict[str, str]:
        names = (self.rules.prompt_template, self.rules.negative_template, "keyframe.j2")
        return {name: self.templates.sha256(name) for name in names}


def _adapter_name(character: str) -> str:
    """A LoRA adapter name from a character's name (PEFT names are module-path-like)."""
    safe = "".join(c if c.isascii() and c.isalnum() else "_" for c in character.lower()).strip("_")
    return "look_" + (safe or "character")[:50]


def _previous(shot: Shot, shotlist: ShotList) -> Shot | None:
    index = next(i for i, s in enumerate(shotlist.shots) if s.id == shot.id)
    return shotlist.shots[index - 1] if index > 0 else None


def write_render_plan(
    shotlist: ShotList,
    shotlist_sha256: str,
    defaults: RenderDefaults,
    templates: TemplateSet,
) -> RenderPlan:
    """Turn every shot into a RenderSpec for the configured model family."""
    writer = PromptWriter(templates=templates, defaults=defaults)
    return RenderPlan(
        title=shotlist.title,
        source_name=shotlist.source_name,
        shotlist_sha256=shotlist_sha256,
        family=writer.rules.family,
        templates=writer.template_hashes(),
        specs=[writer.render_spec(shot, shotlist) for shot in shotlist.shots],
    )
