"""Versions of a delivery: what a review's redo job renders into, without touching the version it came from.

A redo job (jobs.RedoOrder) starts by making its work folder from the parent delivery: the shots not
marked are hard links to the parent's files (the same bytes; a copy where the file system cannot
link), the records are copies, and the cut, timeline and manifest are left to be made again. The
marks are applied to the copy's shot list (each redone shot's take goes up, so it gets a seed of
its own) and written to its edit history with who made them and their notes; shots not marked keep
the parent's exact specs, so only the marked ones render. The folder appears in one rename, so a
kill while it is made leaves nothing a later start would trust. Every write after that replaces a
file (write and rename), never writes into one, so a linked shot of the parent is never changed.

The new version is delivered beside the others as <slug>-v<N>, its manifest naming its parent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydantic import ValidationError

from nightshift.config import Settings
from nightshift.delivery import read_manifest
from nightshift.edits import Mark
from nightshift.errors import NightshiftError
from nightshift.files import inside, sha256_file
from nightshift.jobs import Job, JobStore
from nightshift.plan_files import SHOTLIST_JSON, load_plan_folder, write_renderplan, write_shotlist
from nightshift.planning_job import plan_from_shotlist
from nightshift.provenance import MANIFEST_JSON, Lineage, ParentVersion
from nightshift.review import ReviewBook
from nightshift.records import load_records, save_records
from nightshift.schemas import slugify
from nightshift.seal import delivered_files
from nightshift.signing import MANIFEST_JWS
from nightshift.templating import TemplateSet

REVIEW_SOURCE = "nightshift review"


def parent_folder(job: Job, jobs: JobStore, output: Path) -> Path:
    """The delivery a redo job makes its version from: the one marked, or the newer version of it an
    earlier redo job delivered meanwhile."""
    assert job.redo is not None
    if job.redo.from_folder:
        return inside(job.redo.from_folder, output, what=f"job {job.id}: from_folder")
    folder = output / job.redo.parent
    if job.redo.after_job and jobs.path(job.redo.after_job).is_file():
        earlier = jobs.load(job.redo.after_job)
        if earlier.state == "delivered" and earlier.delivery:
            folder = Path(earlier.delivery)
    return inside(folder, output, what=f"job {job.id}: parent delivery")


def waiting_for(job: Job, jobs: JobStore) -> str | None:
    """A redo job waits while the redo job before it on the same delivery is still to be delivered."""
    if job.redo is None or not job.redo.after_job or job.redo.from_folder:
        return None
    if not jobs.path(job.redo.after_job).is_file():
        return None
    earlier = jobs.load(job.redo.after_job)
    return None if earlier.state in ("delivered", "failed") else earlier.id


def _is_timeline_or_cut(relative: str, slug: str) -> bool:
    stem, _, suffix = relative.rpartition(".")
    return "/" not in relative and stem == slug and suffix in ("mp4", "otio", "edl", "xml")


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def prepare_version(job: Job, parent: Path, uploads: Path, settings: Settings) -> Path:
    """Make the redo job's work folder from `parent` (see the module text); returns it."""
    assert job.redo is not None
    work = Path(job.work_folder)
    manifest = read_manifest(parent)
    redo = set(job.redo.shots)
    recorded = {f.path: f.sha256 for f in manifest.outputs}
    slug = slugify(manifest.title)
    staging = work.with_name(f".{work.name}.preparing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for relative in delivered_files(parent):
            if _is_timeline_or_cut(relative, slug) or relative in (MANIFEST_JSON, MANIFEST_JWS):
                continue  # made again at delivery
            shot = relative.split("/")[-1].rsplit(".", 1)[0]
            if relative.startswith("shots/") and shot in redo:
                continue
            if relative.startswith("keyframes/") and shot.rsplit("-", 1)[0] in redo:
                continue  # a redone shot's keyframes are made (or taken from the user's image) again
            source = parent / relative
            if relative.startswith("shots/"):
                if recorded.get(relative) != sha256_file(source):
                    raise NightshiftError(f"{parent}: {relative} is not the file its manifest records",
                                          f"run nightshift verify {parent}; a version is only made from a delivery "
                                          "that verifies")
                link_or_copy(source, staging / relative)
            else:
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, staging / relative)
        _apply_marks(staging, job, uploads, settings)
        records = load_records(staging)
        save_records(staging, {k: v for k, v in records.items() if k not in redo})
        os.rename(staging, work)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return work


def _apply_marks(folder: Path, job: Job, uploads: Path, settings: Settings) -> None:
    """The marks' changes into the copy's shot list and edit history; only the marked shots' specs change."""
    assert job.redo is not None
    parent_shotlist, parent_plan = load_plan_folder(folder)
    shots = {shot.id: shot.model_dump(mode="json") for shot in parent_shotlist.shots}
    try:
        marks = [Mark.model_validate(m) for m in job.redo.marks]
    except ValidationError as error:
        raise NightshiftError(f"job {job.id}: a review mark in it cannot be read ({error.errors()[0]['msg']})",
                              "mark the shots again (nightshift mark); the job file was edited by hand") from None
    unknown = sorted({m.shot for m in marks} - set(shots) | set(job.redo.shots) - set(shots))
    if unknown:
        raise NightshiftError(f"job {job.id}: no shot {', '.join(unknown)} in {folder.name}'s shot list",
                              "mark the shots again (nightshift mark); the job file was edited by hand")
    for mark in marks:
        shots[mark.shot].update(mark.changes)
        if mark.keyframe:
            image = inside(uploads / mark.keyframe, uploads, what=f"job {job.id}: uploaded keyframe")
            target = inside(folder / mark.changes["first_frame_image"], folder, what=f"job {job.id}: keyframe slot")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target)
    for shot_id in job.redo.shots:
        shots[shot_id]["take"] = shots[shot_id].get("take", 1) + 1
    try:
        edited = parent_shotlist.model_validate({**parent_shotlist.model_dump(mode="json"),
                                                 "shots": [shots[s.id] for s in parent_shotlist.shots]})
    except ValidationError as error:  # marks are checked when made; a job file edited since is not acted on
        raise NightshiftError(f"job {job.id}: its marks do not make a valid shot list ({error.errors()[0]['msg']})",
                              "mark the shots again (nightshift mark)") from None
    write_shotlist(folder, edited, TemplateSet(settings.templates_override_dir))
    who = ", ".join(sorted({m.who for m in marks}))
    notes: dict[str, str] = {}
    for mark in marks:
        if mark.note:
            notes[mark.shot] = f"{notes[mark.shot]} / {mark.note}" if mark.shot in notes else mark.note
    plan = plan_from_shotlist(folder / SHOTLIST_JSON, settings, source=REVIEW_SOURCE, storyboard=False, who=who,
                              notes=notes).plan
    # Shots not marked keep the spec they were rendered with, whatever the settings are tonight.
    kept = {spec.shot_id: spec for spec in parent_plan.specs}
    plan.specs = [spec if spec.shot_id in job.redo.shots else kept[spec.shot_id] for spec in plan.specs]
    write_renderplan(folder, plan)


def start_version(job: Job, jobs: JobStore, output: Path, settings: Settings) -> Path:
    """A redo job's first step: its parent fixed in the job (so a restart makes the same version), then its
    work folder made from that parent."""
    assert job.redo is not None
    parent = parent_folder(job, jobs, output)
    job.redo.from_folder = str(parent)
    job.log(f"making a new version of {parent}: {', '.join(job.redo.shots)} to render again")
    jobs.save(job)
    return prepare_version(job, parent, ReviewBook(settings).root / "uploads", settings)


def version_lineage(job: Job, jobs: JobStore, output: Path, settings: Settings) -> Lineage:
    """The new version's place: its parent (with the parent's manifest hash), the marks it answers (approvals
    made on the parent included), the shots carried."""
    assert job.redo is not None
    parent = parent_folder(job, jobs, output)
    asked = [Mark.model_validate(m) for m in job.redo.marks]
    taken = {m.id for m in asked}
    others = [m for m in ReviewBook(settings).marks(job.redo.parent) if m.action != "redo" and m.id not in taken]
    return lineage_after(parent, Path(job.work_folder), output, sorted(asked + others, key=lambda m: m.when))


def lineage_after(parent: Path, work_folder: Path, output: Path, review: list[Mark] | None = None) -> Lineage:
    """A version made from `parent` (a review's redo, or a later night's upgrade of a cut): the parent with its
    manifest's hash, and the shots carried: still the parent's clip, byte for byte (a shot continuing a redone
    one renders again too)."""
    manifest = read_manifest(parent)
    records = load_records(work_folder)
    carried = [shot.clip.shot_id for shot in manifest.shots
               if shot.clip.shot_id in records and records[shot.clip.shot_id].sha256 == shot.clip.sha256]
    return Lineage(version=manifest.version + 1,
                   parent=ParentVersion(path=parent.relative_to(output.resolve()).as_posix(), version=manifest.version,
                                        manifest_sha256=sha256_file(parent / MANIFEST_JSON),
                                        provenance_sha256=manifest.provenance_sha256),
                   review=review or [], carried_shots=carried)


def version_slug(title: str, version: int) -> str:
    return f"{slugify(title)}-v{version}"
