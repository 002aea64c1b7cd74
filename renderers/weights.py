"""Finding model weights on this machine: a local folder or the Hugging Face cache, never a download.

Rendering runs overnight and unattended, so a missing model must fail at once
with the exact command that fetches it, not start a 40 GB download at 2 a.m.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nightshift.errors import NightshiftError


class ModelNotAvailable(NightshiftError):
    """The model's weights are not on this machine."""


@dataclass(frozen=True)
class WeightsLocation:
    model_id: str
    path: Path
    source: str  # "folder" or "hf-cache"
    revision: str | None  # the cache snapshot's commit, when known


def download_command(model_id: str) -> str:
    return f"hf download {model_id}"


def resolve_weights(model_id: str, models_dir: Path | None = None, allow_download: bool = False,
                    marker: str = "model_index.json") -> WeightsLocation:
    """Where `model_id`'s diffusers folder is: a path, `<models_dir>/<org>/<name>`, or the HF cache.

    `marker` is the file that proves the folder is the right kind: a pipeline's model_index.json,
    or a single model's config.json."""
    direct = Path(model_id).expanduser()
    if direct.is_dir():
        return WeightsLocation(model_id, _check_folder(direct, marker), "folder", None)
    if models_dir is not None:
        for candidate in (models_dir / model_id, models_dir / model_id.replace("/", "--")):
            if candidate.is_dir():
                return WeightsLocation(model_id, _check_folder(candidate, marker), "folder", None)
    if "/" not in model_id or model_id.count("/") > 1:
        raise ModelNotAvailable(f"model {model_id!r}: no such folder",
                                "give a folder holding a diffusers model_index.json, or a Hugging Face repo id like Org/Name")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(model_id, local_files_only=not allow_download))
    except LocalEntryNotFoundError:
        where = f" or {models_dir}" if models_dir else ""
        raise ModelNotAvailable(
            f"model {model_id} is not in the Hugging Face cache{where}; nothing is downloaded during a render",
            f"download it once with: {download_command(model_id)}   (or set render.models_dir to a folder holding it)",
        ) from None
    return WeightsLocation(model_id, _check_folder(snapshot, marker), "hf-cache", snapshot.name)


def _check_folder(path: Path, marker: str = "model_index.json") -> Path:
    if not (path / marker).is_file():
        raise ModelNotAvailable(f"{path}: not a diffusers model folder (no {marker})",
                                f"point at the folder that holds {marker}"
                                + (", transformer/, vae/ ..." if marker == "model_index.json" else ""))
    return path


def weights_present(model_id: str, models_dir: Path | None = None) -> tuple[bool, str]:
    """(present, why) without raising: for `--renderer auto`."""
    try:
        location = resolve_weights(model_id, models_dir)
    except ModelNotAvailable as error:
        return False, f"{error}; {error.hint}"
    return True, f"{model_id} found in {location.source} ({location.path})"
