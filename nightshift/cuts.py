"""A progressive night's cuts: a job's delivery exists from the end of its first pass and is kept up to date as
better rungs land; a later night's cut is a new version beside the earlier one, never a change to it.

A cut is made beside its place in output/ as a hidden folder: the work folder's shots, keyframes and records
hard-linked (the same bytes; every later write in the work folder replaces a file, never writes into one),
then cut, timeline and manifest made and signed there like any delivery. The job says where the cut is going
(`publishing_to`), and the folder is swapped into place in one step (renameat2 RENAME_EXCHANGE), so a reader,
`verify` or the review page finds the old cut or the new one, whole, never a half. A kill anywhere leaves either
the old cut in place or the new one, which the next start adopts; a leftover hidden folder is removed by the
next cut. The cut with every shot at final is the job's delivery: its work folder goes, its script settles.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nightshift.delivery import delivery_folder, read_manifest
from nightshift.errors import NightWaits, NightshiftError
from nightshift.files import exchange, is_partial
from nightshift.job_delivery import describe_self
from nightshift.jobs import Job
from nightshift.ladder import level_of
from nightshift.leases import Owner, lease_key
from nightshift.shot_loop import shot_key
from nightshift.plan_files import load_plan_folder
from nightshift.provenance import MANIFEST_JSON, Lineage
from nightshift.records import load_records, shot_rungs
from nightshift.schemas import RenderPlan, slugify
from nightshift.seal import seal_delivery
from nightshift.signing import MANIFEST_JWS
from nightshift.steps import JobOutcome
from nightshift.versions import lineage_after, link_or_copy, version_lineage, version_slug

if TYPE_CHECKING:
    from nightshift.engine import NightEngine

CUT_FILES = (MANIFEST_JSON, MANIFEST_JWS)


def staging_for(target: Path, job_id: str) -> Path:
    return target.with_name(f".{target.name}.cut-{job_id[-6:]}")


class CutPublisher:
    """Making and replacing the cuts of one engine's progressive jobs (the caller holds the job's lease)."""

    def __init__(self, engine: NightEngine) -> None:
        self.engine = engine

    def adopt_interrupted(self, job: Job) -> None:
        """A kill between swapping a cut into place and saving the job: the folder in place is the job's cut."""
        if not job.publishing_to:
            return
        target = Path(job.publishing_to)
        if (target / MANIFEST_JSON).is_file() and read_manifest(target).job_id == job.id:
            manifest = read_manifest(target)
            job.cut, job.cut_shots = str(target), {c.shot_id: c.sha256 for c in manifest.clips}
            # Its own night, not tonight's: a restart on a later night must make a new version, not touch it.
            job.cut_night = job.publishing_night or self.engine.night.night_id()
            job.log(f"cut at {target} recorded after a restart")
        job.publishing_to = job.publishing_night = None
        self.engine.store.save(job)

    def stale(self, job: Job) -> bool:
        """The work folder holds clips the job's cut does not show (or the cut is an earlier night's)."""
        records = load_records(Path(job.work_folder))
        current = {shot: record.sha256 for shot, record in records.items()}
        return (not job.cut or job.cut_night != self.engine.night.night_id() or current != job.cut_shots
                or not (Path(job.cut) / MANIFEST_JSON).is_file())

    def keep_up(self, job_id: str, force: bool = False) -> Path | None:
        """After a better rung lands: bring the job's cut up to date if night.cut_every_s has passed since the
        last (or `force`, at a pass's or the window's end), when every shot is watchable. Another machine
        making it meanwhile is fine: it brings the same clips."""
        engine = self.engine
        lease = engine.leases.take(lease_key("job", job_id), what=f"cutting job {job_id}")
        if isinstance(lease, Owner):
            return None
        with lease:
            job = engine.store.load(job_id)
            if job.state not in ("queued", "rendering") or not job.rungs or len(job.rungs) < 2:
                return None
            self.adopt_interrupted(job)
            recent = job.cut_made is not None and time.time() - job.cut_made < engine.settings.night.cut_every_s
            if (recent and not force and job.cut_night == engine.night.night_id()) or not self.stale(job):
                return None
            if not self.watchable(job) or self.complete(job):
                return None  # not yet whole; or whole at final, which the job's delivery (engine) makes
            return self.publish(job)

    def watchable(self, job: Job) -> bool:
        _, plan = load_plan_folder(Path(job.work_folder))
        return all(rung is not None for rung in shot_rungs(Path(job.work_folder), plan.specs, self.engine.verified)
                   .values())

    def complete(self, job: Job) -> bool:
        """Every shot at the top of the job's ladder."""
        assert job.rungs
        _, plan = load_plan_folder(Path(job.work_folder))
        top = len(job.rungs) - 1
        rungs = shot_rungs(Path(job.work_folder), plan.specs, self.engine.verified)
        return all(level_of(rung, job.rungs) == top for rung in rungs.values())

    def finish_pass(self, job: Job, plan: RenderPlan) -> JobOutcome:
        """A progressive job whose pass is done here (the caller holds its lease): its delivery when every shot is
        at final, else its cut brought up to date when every shot is watchable, else where the rest renders."""
        engine = self.engine
        folder = Path(job.work_folder)
        rungs = shot_rungs(folder, plan.specs, engine.verified)
        left = [spec for spec in plan.specs if rungs[spec.shot_id] is None]
        if left:
            owners = {owner.host for spec in left if (owner := engine.leases.busy(shot_key(job.id, spec.shot_id)))}
            message = (f"{job.script_name}: {len(left)} shot(s) not watchable yet, rendering on "
                       f"{', '.join(sorted(owners)) or 'no machine yet'}; the machine that renders the last makes the cut")
            engine.say(message)
            return JobOutcome(job.id, "elsewhere", message)
        final = self.complete(job)
        if not final and not self.stale(job):
            return JobOutcome(job.id, "cut", f"{job.label}: its cut at {job.cut} is up to date", job.cut)
        try:
            target = engine.steps.deliver(job.label, lambda: self.publish(job, final=final))
        except NightWaits as error:
            engine.delivery.pause(engine.store.load(job.id), error.report())
            raise
        except NightshiftError as error:
            engine.delivery.fail(engine.store.load(job.id), "delivery", error.report())
            return JobOutcome(job.id, "failed", f"{job.script_name}: delivery failed: {error}")
        if not final:
            return JobOutcome(job.id, "cut", f"{job.label}: cut at {target}; finals follow", str(target))
        engine.steps.delivered(engine.store.load(job.id), target)
        return JobOutcome(job.id, "delivered", f"{job.script_name}: delivered to {target}", str(target))

    def publish(self, job: Job, final: bool = False) -> Path:
        """Make the job's cut from its work folder and swap it into place (see the module text). `final`: every
        shot is at final, so this cut is the job's delivery."""
        engine = self.engine
        work = Path(job.work_folder)
        _, plan = load_plan_folder(work)
        night = engine.night.night_id()
        if job.cut and job.cut_night == night and (Path(job.cut) / MANIFEST_JSON).is_file():
            target = Path(job.cut)  # tonight's cut, brought up to date
        else:
            job.cut_parent = job.cut if job.cut and (Path(job.cut) / MANIFEST_JSON).is_file() else None
            version = self._version(job)
            slug = slugify(plan.title) if version is None else version_slug(plan.title, version)
            target = delivery_folder(engine.output, engine.night.night_date(night), slug)
        lineage = self._lineage(job)
        staging = staging_for(target, job.id)
        shutil.rmtree(staging, ignore_errors=True)
        _link_tree(work, staging, slugify(plan.title))
        try:
            manifest = seal_delivery(staging, engine.settings, script_name=job.script_name,
                                     script_sha256=job.script_sha256, job_id=job.id, renderer=job.renderer or "",
                                     night_started=job.night_started, history=job.history, lineage=lineage,
                                     report=engine.finishing(job, work, plan))
            job.publishing_to, job.publishing_night = str(target), night
            engine.store.save(job)
            if target.exists():
                exchange(staging, target)
            else:
                os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # the old cut, after a swap; a failed one, else
        job.cut, job.cut_night, job.cut_made = str(target), night, time.time()
        job.publishing_to = job.publishing_night = None
        job.cut_shots = {clip.shot_id: clip.sha256 for clip in manifest.clips}
        counts = ", ".join(f"{n} {rung}" for rung, n in manifest.rungs.items())
        job.log(f"{'delivered' if final else 'cut'} at {target}: {counts}")
        engine.night.cut(job, target, job.cut_shots)
        if final:
            job.state, job.delivery, job.work_folder = "delivered", str(target), str(target)
            job.delivered_by = describe_self()
            engine.delivery.settle(job, ok=True)
            shutil.rmtree(work, ignore_errors=True)
        engine.store.save(job)
        engine.say(f"{job.label}: {'delivered' if final else 'cut'} at {target} ({counts})")
        return target

    def _version(self, job: Job) -> int | None:
        """The version number of a new cut: after an earlier night's, one more; a redo's, as its review says."""
        if job.cut_parent:
            return read_manifest(Path(job.cut_parent)).version + 1
        if job.redo is not None:
            return version_lineage(job, self.engine.store, self.engine.output, self.engine.settings).version
        return None

    def _lineage(self, job: Job) -> Lineage | None:
        engine = self.engine
        if job.cut_parent:  # a later night's upgrade of a cut
            return lineage_after(Path(job.cut_parent), Path(job.work_folder), engine.output)
        if job.redo is not None:
            return version_lineage(job, engine.store, engine.output, engine.settings)
        return None


def _link_tree(work: Path, staging: Path, slug: str) -> None:
    """The work folder's files into `staging`, hard-linked: all but its scratch, half-written files and an
    earlier cut's own files (made again)."""
    for path in sorted(work.rglob("*")):
        relative = path.relative_to(work)
        if not path.is_file() or relative.parts[0].startswith(".") or is_partial(path):
            continue
        if relative.as_posix() in CUT_FILES or (len(relative.parts) == 1 and path.stem == slug):
            continue
        link_or_copy(path, staging / relative)
