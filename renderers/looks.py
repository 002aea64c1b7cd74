"""A shot's characters, as they look: their reference images and LoRAs (the shot list's `character_looks`).

Resolved per shot from its spec (renders only the characters in frame bring theirs), checked up front
(a missing file names the shot, the character's file and the fix), and recorded: each file's sha256 and
each adapter's weight. How a family uses them is its own file's business (renderers/ltx.py, wan.py ...);
the LoRAs are loaded once per run and switched per shot (`set_adapters`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from nightshift.errors import NightshiftError
from nightshift.files import sha256_file
from nightshift.schemas import RenderSpec


def fit_image(image: Image.Image, spec_size: tuple[int, int]) -> Image.Image:
    """Scale and centre-crop to exactly `spec_size`, keeping the aspect ratio."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    if image.size == spec_size:
        return image
    return ImageOps.fit(image, spec_size, method=Image.Resampling.LANCZOS)


class LookError(NightshiftError):
    """A reference image or LoRA a shot needs and cannot have."""


@dataclass(frozen=True)
class AdapterFile:
    name: str
    path: Path
    weight: float


@dataclass(frozen=True)
class ShotLook:
    references: list[Image.Image] = field(default_factory=list)  # at the shot's size
    reference_paths: list[Path] = field(default_factory=list)
    loras: list[AdapterFile] = field(default_factory=list)

    def record(self, plan_folder: Path, hashes: FileHashes | None = None) -> dict[str, object]:
        """What the clip record keeps: every file's sha256, every adapter's weight. `hashes` (the renderer's, for
        its run) keeps a LoRA of hundreds of MB in many shots from being read again for each."""
        if not self.reference_paths and not self.loras:
            return {}
        hashes = {} if hashes is None else hashes
        return {"references": [{"path": _shown(p, plan_folder), "sha256": _sha256(p, hashes)} for p in self.reference_paths],
                "loras": [{"name": a.name, "path": _shown(a.path, plan_folder), "sha256": _sha256(a.path, hashes),
                           "weight": a.weight} for a in self.loras]}


FileHashes = dict[tuple[Path, int, int], str]  # (file, size, mtime) -> sha256


def _sha256(path: Path, hashes: FileHashes) -> str:
    stat = path.stat()
    key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
    if key not in hashes:
        hashes[key] = sha256_file(path)
    return hashes[key]


def _shown(path: Path, plan_folder: Path) -> str:
    resolved = path.resolve()
    return resolved.relative_to(plan_folder.resolve()).as_posix() if resolved.is_relative_to(plan_folder.resolve()) \
        else str(resolved)


def resolve_look(spec: RenderSpec, plan_folder: Path) -> ShotLook:
    root = plan_folder.resolve()
    images, paths = [], []
    for relative in spec.references:
        path = (plan_folder / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise LookError(f"{spec.shot_id}: reference image {relative!r} is not a file inside {plan_folder}",
                            "put it beside the shot list and name it in character_looks (shotlist.json)")
        with Image.open(path) as image:
            images.append(fit_image(image, (spec.width, spec.height)))
        paths.append(path)
    loras = []
    for lora in spec.loras:
        path = Path(lora.path) if Path(lora.path).is_absolute() else (plan_folder / lora.path)
        if not path.is_file():
            raise LookError(f"{spec.shot_id}: LoRA {lora.path!r} ({lora.name}) not found",
                            "give character_looks.<name>.lora.path as a local .safetensors file")
        loras.append(AdapterFile(lora.name, path.resolve(), lora.weight))
    return ShotLook(images, paths, loras)
