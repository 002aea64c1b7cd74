"""A job's last steps, under its lease: deliver it (assemble, seal, rename into output/, settle its
script), fail it with a report, or pause it (a full disk) so it stays queued.

The rename into output/ is the last step of a delivery, and the job says where it is going just
before it, so a process killed anywhere here leaves a studio the next start finishes: a delivery
in place is recorded, one not yet in place is made again from the kept shots.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from nightshift import faults
from nightshift.delivery import delivery_folder, move_into_place
from nightshift.errors import DiskFull, NightshiftError, is_disk_full
from nightshift.files import is_partial
from nightshift.inbox import settle
from nightshift.intake import failure_report
from nightshift.jobs import Job
from nightshift.leases import HOST
from nightshift.plan_files import load_plan_folder
from nightshift.records import shots_not_done
from nightshift.schemas import slugify
from nightshift.seal import FINISH_STEPS, seal_delivery
from nightshift.steps import Progress
from nightshift.versions import version_lineage, version_slug

if TYPE_CHECKING:
    from nightshift.engine import NightEngine


def describe_self() -> str:
    return f"pid {os.getpid()} on {HOST}"


def remove_leftovers(work: Path) -> None:
    """Half-written files of killed renders never reach output/: all shots are done when this runs."""
    shutil.rmtree(work / ".work", ignore_errors=True)
    for partial in [p for p in work.rglob(".*") if is_partial(p)]:
        partial.unlink(missing_ok=True)


class JobDelivery:
    """Delivering, failing and pausing jobs for one engine (the caller holds the job's lease)."""

    def __init__(self, engine: NightEngine) -> None:
        self.engine = engine

    def finish_interrupted(self, job: Job) -> Path | None:
        """A run killed after its work folder was renamed into output/ but before the job said so:
        the delivery is complete (the rename is the last step), so record it and settle the script."""
        if job.state == "delivered" or not job.delivering_to:
            return None
        target = Path(job.delivering_to)
        if Path(job.work_folder).exists() or not (target / "manifest.json").is_file():
            return None
        job.state, job.delivery, job.work_folder = "delivered", str(target), str(target)
        job.delivered_by = f"an earlier run (recorded after a restart by {describe_self()})"
        job.log(f"delivered to {target} (recorded after a restart)")
        self.settle(job, ok=True)
        return target

    def deliver(self, job: Job) -> Path:
        """Assemble, seal, move into output/YYYY-MM-DD/<slug>/ and settle the script as done."""
        engine = self.engine
        finished = self.finish_interrupted(job)
        if finished is not None:
            return finished
        work = Path(job.work_folder)
        _, plan = load_plan_folder(work)
        missing = [s.shot_id for s in shots_not_done(work, plan.specs)]
        if missing:
            raise NightshiftError(f"{job.script_name}: shots {', '.join(missing)} are not rendered; nothing delivered")
        remove_leftovers(work)
        try:
            night = datetime.fromisoformat(job.night_started) if job.night_started else datetime.now()
            lineage = version_lineage(job, engine.store, engine.output, engine.settings) if job.redo else None
            slug = slugify(plan.title) if lineage is None else version_slug(plan.title, lineage.version)
            target = delivery_folder(engine.output, night, slug)
            job.log(f"delivering to {target}")
            seal_delivery(work, engine.settings, script_name=job.script_name, script_sha256=job.script_sha256,
                          job_id=job.id, renderer=job.renderer or "", night_started=job.night_started,
                          history=job.history, lineage=lineage, report=engine.finishing(job, work, plan))
            job.delivering_to = str(target)
            engine.store.save(job)
            faults.reached("deliver")
            delivered = move_into_place(work, target)
        except DiskFull as full:  # signing found the disk full
            self.pause(engine.store.load(job.id), full.report())
            raise
        except OSError as error:
            if not is_disk_full(error):
                raise
            full = DiskFull(f"{job.script_name}: the disk filled up while delivering ({error})",
                            "free disk space; every shot is kept and the delivery is made again on the next try")
            self.pause(engine.store.load(job.id), full.report())
            raise full from error
        job.state, job.delivery, job.work_folder = "delivered", str(delivered), str(delivered)
        job.delivered_by = describe_self()
        job.log(f"delivered to {delivered} by {job.delivered_by}")
        self.settle(job, ok=True)
        total = len(plan.specs) + len(FINISH_STEPS)
        engine.progress(job, delivered, Progress(plan.title, "delivered", total, total, str(delivered)))
        return delivered

    def pause(self, job: Job, detail: str) -> None:
        """Stop work on a job without failing it (a full disk): it stays queued, with the reason logged."""
        job.state = "queued"
        job.log(f"paused: {detail}")
        self.engine.store.save(job)

    def fail(self, job: Job, stage: str, detail: str) -> None:
        job.state, job.error = "failed", detail
        job.log(f"failed at {stage}: {detail}")
        self.settle(job, ok=False, report=failure_report(job.script_name, stage,
                                                         detail + f"\n\nWork folder: {job.work_folder}"))

    def settle(self, job: Job, ok: bool, report: str | None = None) -> None:
        """Save the job's new state, then move its script to inbox/done/ or failed/ (if still claimed)."""
        self.engine.store.save(job)
        claimed = Path(job.claimed_path)
        if job.claimed_path and claimed.exists() and claimed.parent.parent.name == ".claimed":
            job.claimed_path = str(settle(claimed, self.engine.inbox, ok=ok, report=report))
            self.engine.store.save(job)
