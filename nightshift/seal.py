"""Finishing a delivery folder: the cut, its timeline, the signed cut, manifest.json and its signature.

Shots are signed once, when they are rendered (nightshift/credentials.py). Finishing a folder:
1. assemble the cut by stream copy (renderers/assemble.py) and write its timeline (.otio, .edl, .xml);
2. build the record (manifest.json without its file list) and manifest.md;
3. sign the cut: its shots as ingredients, the record's provenance sha256, every other file's sha256;
4. write manifest.json with every delivered file's sha256, then sign it (manifest.jws).
Finishing again after a re-render redoes only these, with the edit and run history carried
forward: every shot not re-rendered, and its keyframes, stay byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nightshift import faults
from nightshift.config import Settings
from nightshift.credentials import ShotSigner, cut_definition, cut_ingredients, cut_source_type
from nightshift.delivery import read_manifest
from nightshift.errors import NightshiftError
from nightshift.files import now_utc, sha256_file, write_atomic
from nightshift.plan_files import load_plan_folder
from nightshift.provenance import (MANIFEST_JSON, MANIFEST_SCHEMA, Lineage, Manifest, OutputFile, Signature, build_manifest,
                                   derived_from, manifest_schema, write_manifest_md)
from nightshift.records import load_records, save_records
from nightshift.renderers.assemble import assemble_folder
from nightshift.renderers.encode import exact_rate
from nightshift.renderers.shots import finish_settings
from nightshift.renderers.storyboard import write_storyboard
from nightshift.renderers.timeline import write_timelines
from nightshift.schemas import CutRecord, slugify
from nightshift.signing import MANIFEST_JWS, Signer, make_signer, sign_detached, sign_video, signing_identity
from nightshift.templating import TemplateSet

# The delivery steps after the last shot, in order: what progress reports name.
FINISH_STEPS = ("assembling the cut", "writing the timeline and storyboard", "signing the cut", "sealing the record")
Report = Callable[[str, float, str], None]  # (step, how far through it 0-1, detail)


def _quiet(step: str, fraction: float, detail: str) -> None:
    """The default report: say nothing."""


def make_cut(folder: Path, settings: Settings, report: Report = _quiet) -> CutRecord:
    """Assemble <slug>.mp4 from every shot of the folder's plan, and write its timeline beside it."""
    shotlist, plan = load_plan_folder(folder)
    records = load_records(folder)
    encode = finish_settings(settings.render)[1]
    report(FINISH_STEPS[0], 0.0, "")
    cut, result = assemble_folder(folder, plan, encode, settings.cut_runs_dir, progress=lambda done, total, what: report(
        FINISH_STEPS[0], done / (total + 1), f"{done}/{total} {what}"))  # 1.0 only when the cut is written
    report(FINISH_STEPS[0], 1.0, result.describe())
    faults.reached("deliver")
    report(FINISH_STEPS[1], 0.0, "")
    clips = [records[spec.shot_id] for spec in plan.specs]
    rate = exact_rate(clips[0].fps)
    timelines, skipped = write_timelines(folder, shotlist, plan, records, rate)
    storyboard = write_storyboard(folder, shotlist, plan)  # now with the rendered frames
    report(FINISH_STEPS[1], 1.0, "; ".join([", ".join(path.name for path in [*timelines, storyboard]), *skipped]))
    return CutRecord(file=cut.name, frames=result.frames, fps=float(rate), copied_frames=result.copied_frames,
                     encoded_frames=result.encoded_frames, transition_runs=result.runs,
                     reencoded_because=result.reencoded_because, encoded_as=encode.describe(),
                     encode_settings=result.encode, digital_source_type=cut_source_type(clips),
                     seconds=round(result.seconds, 3))


def seal_delivery(folder: Path, settings: Settings, *, script_name: str, script_sha256: str, renderer: str,
                  job_id: str | None = None, night_started: str | None = None, history: list[str] = (),
                  lineage: Lineage | None = None, report: Report = _quiet) -> Manifest:
    """Make the cut and timeline, write manifest.json and manifest.md, sign the cut and the manifest."""
    shotlist, plan = load_plan_folder(folder)
    records = load_records(folder)
    missing = [s.shot_id for s in plan.specs if s.shot_id not in records]
    if missing:
        raise NightshiftError(f"{folder}: shots {', '.join(missing)} have no render record; cannot seal")
    if settings.signing.enabled:  # shots rendered while signing was off are signed now, once
        signer = ShotSigner(settings)
        for spec in plan.specs:
            clip = records[spec.shot_id]
            if clip.sha256 == clip.rendered_sha256:
                records[spec.shot_id] = signer.sign(folder, clip, spec, plan.title, shotlist.source_sha256)
        save_records(folder, records)
    cut = make_cut(folder, settings, report)
    manifest = build_manifest(folder, shotlist, plan, records, script_name=script_name, script_sha256=script_sha256,
                              renderer=renderer, delivered=now_utc(), job_id=job_id, night_started=night_started,
                              history=history, cut=cut, lineage=lineage)
    write_atomic(folder / MANIFEST_SCHEMA, manifest_schema())
    write_manifest_md(folder, manifest, TemplateSet(settings.templates_override_dir))
    cut_name = f"{slugify(plan.title)}.mp4"
    signed: set[str] = set()
    identity = None
    if settings.signing.enabled:
        report(FINISH_STEPS[2], 0.0, "")
        identity = signing_identity(settings.project_dir, settings.signing.cert_chain, settings.signing.private_key)
        files = {path: sha256_file(folder / path) for path in delivered_files(folder) if path != cut_name}
        sign_video(folder / cut_name, cut_definition(manifest, cut, files), make_signer(identity, settings.signing.tsa_url),
                   cut_ingredients(folder, manifest.clips))
        faults.reached("deliver")
        signer = Signer.of_certificate(identity.certificates()[0])
        manifest.signature = Signature(signer=signer.describe(), serial=f"{signer.serial:x}", local_ca=identity.local_ca)
        signed = {cut_name} | {clip.file for clip in manifest.clips if clip.sha256 != clip.rendered_sha256}
        report(FINISH_STEPS[2], 1.0, signer.describe())
    report(FINISH_STEPS[3], 0.0, "")
    # Files hashed for the cut's credentials are unchanged since (only the cut was written after): not read again.
    hashed = files if identity is not None else {}
    manifest.outputs = [OutputFile(path=p, sha256=hashed.get(p) or sha256_file(folder / p),
                                   bytes=(folder / p).stat().st_size, signed=p in signed,
                                   derived_from=derived_from(p, manifest, cut_name)) for p in delivered_files(folder)]
    write_atomic(folder / MANIFEST_JSON, manifest.model_dump_json(indent=2))
    if identity is not None:
        sign_detached(folder / MANIFEST_JSON, identity)
    else:
        (folder / MANIFEST_JWS).unlink(missing_ok=True)
    report(FINISH_STEPS[3], 1.0, f"{len(manifest.outputs)} files sealed")
    return manifest


def delivered_files(folder: Path) -> list[str]:
    """Every file a delivery consists of, relative: all but manifest.json and its signature, hidden and
    working files."""
    names = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative in (MANIFEST_JSON, MANIFEST_JWS) or relative.startswith(".") or "/." in relative:
            continue
        names.append(relative)
    return names


def check_same_signer(folder: Path, settings: Settings) -> None:
    """A delivery is re-rendered only under the identity that signed it: one delivery, one signer."""
    if not (folder / MANIFEST_JSON).is_file() or not settings.signing.enabled:
        return
    old = read_manifest(folder).signature
    if old is None or not old.serial:
        return
    identity = signing_identity(settings.project_dir, settings.signing.cert_chain, settings.signing.private_key)
    now = Signer.of_certificate(identity.certificates()[0])
    if f"{now.serial:x}" != old.serial:
        raise NightshiftError(f"{folder} was signed by {old.signer}; this project ({settings.project_dir}) signs as "
                              f"{now.describe()}",
                              "run nightshift from the project that made the delivery (cd into it, or --config its "
                              "nightshift.toml), so every file keeps one signer")


def reseal_delivery(folder: Path, note: str, settings: Settings, report: Report = _quiet) -> None:
    """A delivery re-rendered in place is finished again: new cut and record, the change noted."""
    old = read_manifest(folder)
    seal_delivery(folder, settings, script_name=old.inputs.script.name, script_sha256=old.inputs.script.sha256,
                  renderer=old.renderer, job_id=old.job_id, night_started=old.night_started,
                  history=[*old.history, note], lineage=old.lineage, report=report)
