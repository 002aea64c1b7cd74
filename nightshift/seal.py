"""Sealing a delivery folder: manifest.json, manifest.md, and C2PA Content Credentials in every MP4.

Order matters: the record is built first (its provenance_sha256 goes into every clip's
credentials), then each shot and the cut are signed, then the delivered files, signed, are
hashed into the manifest's outputs. Sealing again after a re-render rebuilds all of it, with
the edit history and run history carried forward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nightshift import __version__, faults
from nightshift.config import Settings
from nightshift.errors import NightshiftError
from nightshift.files import now_utc, sha256_file, write_atomic
from nightshift.plan_files import load_plan_folder
from nightshift.provenance import (MANIFEST_JSON, MANIFEST_SCHEMA, Manifest, OutputFile, Signature,
                                   build_manifest, derived_from, file_ref, manifest_schema, write_manifest_md)
from nightshift.records import load_records, save_records
from nightshift.schemas import ClipRecord, slugify
from nightshift.templating import TemplateSet
from nightshift.delivery import read_manifest
from nightshift.signing import NIGHTSHIFT_ASSERTION, make_signer, sign_video, signing_identity

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AGENT = {"name": "Nightshift", "version": __version__}


def _shot_credentials(manifest: Manifest, clip: ClipRecord) -> dict[str, Any]:
    made_by = (f"{clip.model_id} ({clip.pipeline}), seed {clip.seed}, {clip.steps} steps, quantization "
               f"{clip.quantization}, tier {clip.tier}, {clip.device}" if not clip.animatic
               else "Nightshift animatic: storyboard cards drawn from the shot list, not a video model")
    edits = [{"field": e.field, "when": e.when} for e in manifest.edits if e.shot in (clip.shot_id, None)]
    return {
        "claim_generator_info": [AGENT], "title": f"{manifest.title}: {clip.shot_id}", "format": "video/mp4",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.created", "softwareAgent": AGENT, "description": made_by,
                 "digitalSourceType": IPTC + ("algorithmicMedia" if clip.animatic else "trainedAlgorithmicMedia"),
                 "parameters": {"model": clip.model_id or "animatic", "seed": clip.seed, "tier": clip.tier}},
                {"action": "c2pa.edited", "softwareAgent": AGENT,
                 "description": f"upscaled to {clip.upscaled_to}; encoded {clip.encoded_as}"},
            ]}},
            {"label": NIGHTSHIFT_ASSERTION, "data": {
                "provenance_sha256": manifest.provenance_sha256, "manifest": MANIFEST_JSON, "shot": clip.shot_id,
                "spec_sha256": clip.spec_sha256, "rendered_sha256": clip.rendered_sha256,
                "script": {"name": manifest.inputs.script.name, "sha256": manifest.inputs.script.sha256},
                "human_edits": edits}},
        ],
    }


def _cut_credentials(manifest: Manifest) -> dict[str, Any]:
    return {
        "claim_generator_info": [AGENT], "title": manifest.title, "format": "video/mp4",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.created", "softwareAgent": AGENT,
                 "digitalSourceType": IPTC + "compositeWithTrainedAlgorithmicMedia",
                 "description": f"the cut of {manifest.title}, assembled from {len(manifest.shots)} shots"},
                {"action": "c2pa.edited", "softwareAgent": AGENT,
                 "description": "shots joined in shot-list order (cuts, crossfades and fades as the shot list asks)"},
            ]}},
            {"label": NIGHTSHIFT_ASSERTION, "data": {
                "provenance_sha256": manifest.provenance_sha256, "manifest": MANIFEST_JSON, "shot": None,
                "script": {"name": manifest.inputs.script.name, "sha256": manifest.inputs.script.sha256},
                "human_edits": [{"shot": e.shot, "field": e.field, "when": e.when} for e in manifest.edits]}},
        ],
    }


def seal_delivery(folder: Path, settings: Settings, *, script_name: str, script_sha256: str, renderer: str,
                  job_id: str | None = None, night_started: str | None = None, history: list[str] = ()) -> Manifest:
    """Write manifest.json and manifest.md and sign every MP4 in `folder`. Returns the manifest."""
    shotlist, plan = load_plan_folder(folder)
    records = load_records(folder)
    missing = [s.shot_id for s in plan.specs if s.shot_id not in records]
    if missing:
        raise NightshiftError(f"{folder}: shots {', '.join(missing)} have no render record; cannot seal")
    manifest = build_manifest(folder, shotlist, plan, records, script_name=script_name, script_sha256=script_sha256,
                              renderer=renderer, delivered=now_utc(), job_id=job_id, night_started=night_started,
                              history=history)
    write_atomic(folder / MANIFEST_SCHEMA, manifest_schema())
    write_manifest_md(folder, manifest, TemplateSet(settings.templates_override_dir))
    cut_name = f"{slugify(plan.title)}.mp4"
    signed: set[str] = set()
    if settings.signing.enabled:
        identity = signing_identity(settings.project_dir, settings.signing.cert_chain, settings.signing.private_key)
        signer = make_signer(identity, settings.signing.tsa_url)
        for spec in plan.specs:
            clip = records[spec.shot_id]
            sign_video(folder / clip.file, _shot_credentials(manifest, clip), signer)
            faults.reached("deliver")
            clip.sha256 = sha256_file(folder / clip.file)
            signed.add(clip.file)
        save_records(folder, records)
        if (folder / cut_name).is_file():
            shots = [({"title": c.file, "relationship": "componentOf"}, folder / c.file) for c in manifest.clips]
            sign_video(folder / cut_name, _cut_credentials(manifest), signer, shots)
            signed.add(cut_name)
        manifest.signature = Signature(signer=identity.subject(), local_ca=identity.local_ca)
        manifest.shots = [shot.model_copy(update={"clip": records[shot.spec.shot_id]}) for shot in manifest.shots]
    manifest.outputs = [OutputFile(**file_ref(folder, p).model_dump(), signed=p in signed,
                                   derived_from=derived_from(p, manifest, cut_name)) for p in delivered_files(folder)]
    write_atomic(folder / MANIFEST_JSON, manifest.model_dump_json(indent=2))
    return manifest


def delivered_files(folder: Path) -> list[str]:
    """Every file a delivery consists of, relative: all but manifest.json itself, hidden and working files."""
    names = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST_JSON or relative.startswith(".") or "/." in relative:
            continue
        names.append(relative)
    return names


def reseal_delivery(folder: Path, note: str, settings: Settings) -> None:
    """A delivery re-rendered in place is sealed again: new manifest, re-signed clips, the change noted."""
    if not (folder / MANIFEST_JSON).is_file():
        return
    old = read_manifest(folder)
    seal_delivery(folder, settings, script_name=old.inputs.script.name, script_sha256=old.inputs.script.sha256,
                  renderer=old.renderer, job_id=old.job_id, night_started=old.night_started,
                  history=[*old.history, note])
