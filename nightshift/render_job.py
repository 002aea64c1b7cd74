"""The render job as plain functions: a plan folder -> 4K shot clips, keyframes, a cut and a record of each clip."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nightshift.config import Settings
from nightshift.errors import NightshiftError
from nightshift.plan_files import RENDERPLAN_JSON, SHOTLIST_JSON, load_renderplan, load_shotlist, write_atomic
from nightshift.schemas import RenderPlan, RenderSpec, ShotList, slugify
from nightshift.shot_render import AnimaticShotRenderer, ClipRecord, ShotJob, ShotRenderer, now_utc, sha256_file, spec_sha256
from nightshift.renderers.assemble import CutEntry, assemble_cut
from nightshift.renderers.encode import EncodeSettings

__all__ = ["RENDERS_JSON", "RenderResult", "render_plan_folder", "sha256_file", "load_plan_folder", "assemble_folder"]

RENDERS_JSON = "renders.json"


@dataclass(frozen=True)
class RenderResult:
    folder: Path
    records: list[ClipRecord]
    cut: Path


def load_plan_folder(plan_folder: Path) -> tuple[ShotList, RenderPlan]:
    shotlist, _ = load_shotlist(plan_folder / SHOTLIST_JSON)
    plan, _ = load_renderplan(plan_folder / RENDERPLAN_JSON)
    return shotlist, plan


def load_records(folder: Path) -> dict[str, ClipRecord]:
    path = folder / RENDERS_JSON
    if not path.exists():
        return {}
    return {r["shot_id"]: ClipRecord.model_validate(r) for r in json.loads(path.read_text())["clips"]}


def shot_job(plan_folder: Path, out_folder: Path, shot_id: str) -> ShotJob:
    """The work order for one shot of a plan folder, writing into out_folder/shots and keyframes."""
    shotlist, plan = load_plan_folder(plan_folder)
    shot = next((s for s in shotlist.shots if s.id == shot_id), None)
    spec = next((s for s in plan.specs if s.shot_id == shot_id), None)
    if shot is None or spec is None:
        raise NightshiftError(f"{plan_folder}: no shot {shot_id} in this plan", "see shotlist.md for the shot ids")
    (out_folder / ".work").mkdir(parents=True, exist_ok=True)
    return ShotJob(shot, spec, plan_folder, out_folder / "shots", out_folder / "keyframes", out_folder / ".work")


def save_records(folder: Path, records: dict[str, ClipRecord]) -> None:
    write_atomic(folder / RENDERS_JSON, json.dumps({"clips": [r.model_dump() for r in records.values()]}, indent=2))


def is_shot_done(folder: Path, spec: RenderSpec, record: ClipRecord | None) -> bool:
    """Done means: a record for exactly this spec, and the clip on disk still has the recorded hash.

    A clip signed again after its record was written (a crash between the two) still counts when
    its Content Credentials validate (they bind the file's bytes) and name the recorded render."""
    if record is None or record.spec_sha256 != spec_sha256(spec):
        return False
    clip = folder / record.file
    if not clip.is_file():
        return False
    if sha256_file(clip) == record.sha256:
        return True
    from nightshift.signing import read_credentials

    credentials = read_credentials(clip)
    return (record.rendered_sha256 is not None and credentials.present and not credentials.failures
            and credentials.nightshift is not None
            and credentials.nightshift.get("rendered_sha256") == record.rendered_sha256)


def refresh_manifest(folder: Path, note: str, settings: Settings | None = None) -> None:
    """A delivery re-rendered in place is sealed again: new manifest, re-signed clips, the change noted."""
    from nightshift.delivery import MANIFEST_JSON, read_manifest
    from nightshift.seal import seal_delivery

    if not (folder / MANIFEST_JSON).is_file():
        return
    old = read_manifest(folder)
    seal_delivery(folder, settings or Settings(), script_name=old.inputs.script.name,
                  script_sha256=old.inputs.script.sha256, renderer=old.renderer, job_id=old.job_id,
                  night_started=old.night_started, history=[*old.history, note])


def assemble_folder(folder: Path, plan: RenderPlan, encode: EncodeSettings = EncodeSettings()) -> Path:
    """Join every rendered shot of `plan` found in folder/shots into <slug>.mp4, in shot-list order."""
    shots_dir = folder / "shots"
    entries = [CutEntry(shots_dir / f"{spec.shot_id}.mp4", spec.transition) for spec in plan.specs
               if (shots_dir / f"{spec.shot_id}.mp4").exists()]
    cut = folder / f"{slugify(plan.title)}.mp4"
    assemble_cut(entries, cut, encode)
    return cut


def render_plan_folder(plan_folder: Path, shot_ids: list[str] | None = None, out_dir: Path | None = None,
                       renderer: ShotRenderer | None = None, encode: EncodeSettings = EncodeSettings(),
                       progress: Callable[[str], None] | None = None, settings: Settings | None = None) -> RenderResult:
    """Render the shots of a plan folder (all, or `shot_ids`), then assemble every rendered shot into the cut."""
    shotlist, plan = load_plan_folder(plan_folder)
    renderer = renderer or AnimaticShotRenderer(encode=encode)
    shots = {s.id: s for s in shotlist.shots}
    folder = out_dir or plan_folder
    records = load_records(folder)
    # Without --shots: every shot whose clip is missing, altered, or was made from a different spec.
    wanted = shot_ids or [s.shot_id for s in plan.specs if not is_shot_done(folder, s, records.get(s.shot_id))]
    unknown = [i for i in wanted if i not in shots]
    if unknown:
        raise NightshiftError(f"{plan_folder}: no shot {', '.join(unknown)} in this plan",
                              f"shot ids look like {plan.specs[0].shot_id}; see shotlist.md")
    work_dir = folder / ".work"
    work_dir.mkdir(parents=True, exist_ok=True)
    for spec in plan.specs:
        if spec.shot_id not in wanted:
            continue
        if progress:
            progress(f"{spec.shot_id} render ({renderer.name}, {spec.num_frames} frames)")
        job = ShotJob(shots[spec.shot_id], spec, plan_folder, folder / "shots", folder / "keyframes", work_dir)
        records[spec.shot_id] = renderer.render(job)
        save_records(folder, records)
    if progress:
        progress("assembling the cut")
    cut = assemble_folder(folder, plan, encode)
    if not any(work_dir.iterdir()):
        work_dir.rmdir()
    if wanted:
        refresh_manifest(folder, f"{now_utc()} re-rendered {', '.join(wanted)} with {renderer.name}; cut re-assembled",
                         settings)
    ordered = [records[s.shot_id] for s in plan.specs if s.shot_id in records]
    return RenderResult(folder, ordered, cut)
