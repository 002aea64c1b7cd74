"""What each MP4's Content Credentials say, and signing a shot once, when it is rendered.

A shot's credentials describe that shot alone: its spec, seed, model and the sha256 of every
weight file, its keyframes and the user images it started from, the script it came from, and
how it was upscaled and encoded. Nothing that happens to another shot changes them, so a shot
is signed once, right after it renders, and never again.

The cut's credentials name every shot as an ingredient (a `c2pa.placed` action each), the
delivery's record (its provenance sha256) and the sha256 of every other file of the delivery.

Labels follow what happened (IPTC digital source types): an animatic shot is
`algorithmicMedia` (drawn by our code, no trained model), a model's shot
`trainedAlgorithmicMedia`. The cut has its shots' type when they all share one, and is a
composite otherwise: `compositeWithTrainedAlgorithmicMedia` when any shot came from a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nightshift import __version__
from nightshift.config import Settings
from nightshift.files import sha256_file
from nightshift.provenance import MANIFEST_JSON, Manifest, hash_weight_files
from nightshift.schemas import ClipRecord, CutRecord, RenderSpec
from nightshift.signing import NIGHTSHIFT_ASSERTION, make_signer, sign_video, signing_identity

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AGENT = {"name": "Nightshift", "version": __version__}
# Credentials carry text fields up to this long; a longer one (a 1 MB prompt from a one-line script) is cut,
# marked so, and still bound in full by spec_sha256. c2pa-python refuses a manifest definition of a few MB.
TEXT_LIMIT = 4096


def _bounded(value: Any, cut: list[str], where: str = "") -> Any:
    """`value` with every string longer than TEXT_LIMIT shortened; `cut` collects where."""
    if isinstance(value, str) and len(value) > TEXT_LIMIT:
        cut.append(where or "(value)")
        return value[:TEXT_LIMIT] + f"... [{len(value) - TEXT_LIMIT} more characters; spec_sha256 covers them]"
    if isinstance(value, dict):
        return {key: _bounded(item, cut, f"{where}.{key}" if where else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_bounded(item, cut, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def shot_source_type(clip: ClipRecord) -> str:
    return "algorithmicMedia" if clip.animatic else "trainedAlgorithmicMedia"


def cut_source_type(clips: list[ClipRecord]) -> str:
    kinds = {shot_source_type(clip) for clip in clips}
    if len(kinds) == 1:
        return kinds.pop()
    return "compositeWithTrainedAlgorithmicMedia"  # mixed: some shots from a trained model


def shot_assertion(folder: Path, clip: ClipRecord, spec: RenderSpec, script_sha256: str) -> dict[str, Any]:
    """The shot's own record, as its credentials carry it."""
    weights = Path(clip.weights) if clip.weights else None
    shortened: list[str] = []
    spec_data = _bounded(spec.model_dump(mode="json"), shortened)
    return {
        "shot": clip.shot_id, "spec_sha256": clip.spec_sha256, "rendered_sha256": clip.rendered_sha256,
        "rung": clip.rung, "stands_for": clip.stands_for, "spec": spec_data, "spec_fields_shortened": shortened, "script_sha256": script_sha256,
        "model": {"id": clip.model_id, "pipeline": clip.pipeline, "revision": clip.weights_revision,
                  "weights": [{"path": f.path, "sha256": f.sha256} for f in hash_weight_files(weights)]
                  if weights is not None and weights.is_dir() else []},
        "render": {"backend": clip.backend, "seed": clip.seed, "steps": clip.steps, "quantization": clip.quantization,
                   "tier": clip.tier, "device": clip.device, "scheduler": clip.scheduler, "frames": clip.frames,
                   "fps": clip.fps},
        "keyframes": [{"path": path, "sha256": sha256_file(folder / path)} for path in clip.keyframes
                      if (folder / path).is_file()],
        "user_images": [{"path": k.image_path, "sha256": sha256_file(folder / k.image_path)} for k in spec.keyframes
                        if k.image_path and (folder / k.image_path).is_file()],
        "upscale": clip.upscale_settings, "encode": clip.encode_settings,
        **({"comfyui": {k: v for k, v in clip.comfyui.items() if k != "graph"}} if clip.comfyui else {}),
    }


def shot_definition(folder: Path, clip: ClipRecord, spec: RenderSpec, title: str, script_sha256: str) -> dict[str, Any]:
    made_by = (f"{clip.model_id} ({clip.pipeline}), seed {clip.seed}, {clip.steps} steps, quantization "
               f"{clip.quantization}, tier {clip.tier}, {clip.device}" if not clip.animatic
               else "Nightshift animatic: storyboard cards drawn from the shot list, not a video model")
    created_by = AGENT
    if clip.comfyui:  # the pixels came from the user's ComfyUI, driven by Nightshift
        created_by = {"name": "ComfyUI", "version": str(clip.comfyui.get("version") or "unknown")}
        made_by = (f"ComfyUI {created_by['version']} at {clip.comfyui.get('server')}, workflow "
                   f"{Path(str(clip.comfyui.get('workflow'))).name} (sha256 {clip.comfyui.get('workflow_sha256')}), "
                   f"prompt {clip.comfyui.get('prompt_id')}, seed {clip.seed}, driven by Nightshift")
    return {
        "claim_generator_info": [AGENT], "title": f"{title}: {clip.shot_id}", "format": "video/mp4",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.created", "softwareAgent": created_by, "description": made_by,
                 "digitalSourceType": IPTC + shot_source_type(clip),
                 "parameters": {"model": clip.model_id or "animatic", "seed": clip.seed, "tier": clip.tier}},
                {"action": "c2pa.edited", "softwareAgent": AGENT,
                 "description": f"upscaled to {clip.upscaled_to}; encoded {clip.encoded_as}"},
            ]}},
            {"label": NIGHTSHIFT_ASSERTION, "data": shot_assertion(folder, clip, spec, script_sha256)},
        ],
    }


def cut_definition(manifest: Manifest, cut: CutRecord, files: dict[str, str]) -> dict[str, Any]:
    """The cut's credentials: `files` is every other file of the delivery (path -> sha256) at signing time."""
    placed = [{"action": "c2pa.placed", "softwareAgent": AGENT, "description": f"shot {clip.shot_id}",
               "parameters": {"ingredientIds": [clip.shot_id]}} for clip in manifest.clips]
    return {
        "claim_generator_info": [AGENT], "title": manifest.title, "format": "video/mp4",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.created", "softwareAgent": AGENT, "digitalSourceType": IPTC + cut.digital_source_type,
                 "description": f"the cut of {manifest.title}, assembled from {len(manifest.shots)} shots: "
                                f"{cut.copied_frames} frames copied as rendered, {cut.encoded_frames} encoded "
                                "for transitions"},
                *placed,
            ]}},
            {"label": NIGHTSHIFT_ASSERTION, "data": {
                "provenance_sha256": manifest.provenance_sha256, "manifest": MANIFEST_JSON, "shot": None,
                "script": {"name": manifest.inputs.script.name, "sha256": manifest.inputs.script.sha256},
                "files": files, "cut": cut.model_dump(mode="json")}},
        ],
    }


def cut_ingredients(folder: Path, clips: list[ClipRecord]) -> list[tuple[dict[str, Any], Path]]:
    return [({"title": clip.file, "relationship": "componentOf", "label": clip.shot_id}, folder / clip.file)
            for clip in clips]


class ShotSigner:
    """Signs each shot as it lands (the identity is loaded on first use); a no-op when signing is off."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self._signer = settings, None

    def sign(self, folder: Path, clip: ClipRecord, spec: RenderSpec, title: str, script_sha256: str) -> ClipRecord:
        """Sign the shot's MP4 in place; the record's sha256 becomes the signed file's."""
        if not self.settings.signing.enabled:
            return clip
        if self._signer is None:
            signing = self.settings.signing
            identity = signing_identity(self.settings.project_dir, signing.cert_chain, signing.private_key)
            self._signer = make_signer(identity, signing.tsa_url)
        sign_video(folder / clip.file, shot_definition(folder, clip, spec, title, script_sha256), self._signer)
        return clip.model_copy(update={"sha256": sha256_file(folder / clip.file)})
