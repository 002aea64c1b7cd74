"""A shot's first and last frames: the user's own image, or a still from a local text-to-image model.

User images (a Blender render beside the script, named in the shot list) win;
otherwise, when a keyframe model is configured, the keyframe's prompt (frame
description + character bible + style) is rendered at the shot's size with the
shot's seed. Every keyframe is saved as a PNG next to the clip, whatever its source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from nightshift.errors import NightshiftError
from nightshift.schemas import RenderSpec
from nightshift.renderers.continuity import end_frame
from nightshift.renderers.looks import fit_image
from nightshift.renderers.memory import compute_dtype
from nightshift.renderers.video import Keyframe
from nightshift.renderers.weights import WeightsLocation, resolve_weights


class KeyframeError(NightshiftError):
    """A keyframe image that cannot be used."""


class TextToImage:
    """A local text-to-image pipeline (FLUX.1-schnell, SDXL, PixArt ...), loaded once per run."""

    def __init__(self, model_id: str, device: str = "cpu", models_dir: Path | None = None, steps: int = 4,
                 guidance: float = 0.0) -> None:
        if steps < 1:
            raise ValueError(f"keyframe steps must be at least 1, not {steps}")
        self.location: WeightsLocation = resolve_weights(model_id, models_dir)
        self.device, self.steps, self.guidance = device, steps, guidance
        self._pipe: Any = None

    def _load(self) -> Any:
        if self._pipe is None:
            from diffusers import AutoPipelineForText2Image

            pipe = AutoPipelineForText2Image.from_pretrained(self.location.path, dtype=compute_dtype(self.device),
                                                             local_files_only=True)
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe.to(self.device)
        return self._pipe

    def generate(self, prompt: str, width: int, height: int, seed: int) -> Image.Image:
        pipe = self._load()
        image = pipe(prompt=prompt, width=width, height=height, num_inference_steps=self.steps,
                     guidance_scale=self.guidance, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        # Some models snap sizes to their own buckets; the video model needs exactly the shot's size.
        return fit_image(image, spec_size=(width, height))

    def describe(self) -> dict[str, object]:
        return {"model_id": self.location.model_id, "weights": str(self.location.path), "steps": self.steps,
                "guidance": self.guidance}


def load_user_image(plan_folder: Path, relative: str, size: tuple[int, int]) -> Image.Image:
    root = plan_folder.resolve()
    path = (plan_folder / relative).resolve()
    if root not in path.parents:
        raise KeyframeError(f"keyframe image {relative!r} is outside the plan folder {plan_folder}",
                            "put the image inside the plan folder and give its relative path")
    if not path.is_file():
        raise KeyframeError(f"keyframe image {relative!r} not found in {plan_folder}",
                            "check first_frame_image / last_frame_image in shotlist.json")
    try:
        with Image.open(path) as image:
            image.load()
            return fit_image(image, size)
    except (OSError, Image.DecompressionBombError) as error:
        raise KeyframeError(f"keyframe image {path.name}: cannot be read as an image ({error})",
                            "save it as PNG or JPEG") from None


def prepare_keyframes(spec: RenderSpec, plan_folder: Path, keyframes_dir: Path,
                      text_to_image: TextToImage | None) -> tuple[list[Keyframe], list[str]]:
    """Resolve a spec's keyframes into images saved as PNG; returns them and notes on what was skipped."""
    keyframes: list[Keyframe] = []
    notes: list[str] = []
    size = (spec.width, spec.height)
    for index, key in enumerate(spec.keyframes):
        name = "first" if key.frame_index == 0 else "last" if key.frame_index == spec.num_frames - 1 else f"f{key.frame_index}"
        target = keyframes_dir / f"{spec.shot_id}-{name}.png"
        carried = end_frame(keyframes_dir, key.from_shot) if key.from_shot else None
        if key.image_path:
            image, source = load_user_image(plan_folder, key.image_path, size), "user"
        elif carried is not None and carried.is_file():
            with Image.open(carried) as last:
                image, source = fit_image(last, size), f"continues {key.from_shot}"
        elif text_to_image is not None and key.prompt:
            image, source = text_to_image.generate(key.prompt, spec.width, spec.height, (spec.seed + index) % 2**32), "generated"
        else:
            notes.append(f"no {name} keyframe: no image given and no keyframe model configured"
                         + (f" ({key.from_shot} left no end frame to continue from)" if carried is not None else ""))
            continue
        keyframes_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        image.save(partial, format="PNG")
        partial.replace(target)
        keyframes.append(Keyframe(key.frame_index, image, source, target))
    return keyframes, notes
