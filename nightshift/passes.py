"""Which pass of the quality ladder the queue is on, for one engine (nightshift/ladder.py has the order).

A progressive night's queue is on the lowest pass any job this process can work on still needs: every draft
before any final. A job's pass is a `Climb` for the shot loop; a job planned mid-night with shots below the
pass being rendered takes the queue down to it (the shot loop yields between shots).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from nightshift.errors import NightshiftError
from nightshift.jobs import Job
from nightshift.ladder import ladder_for, level_of, needed_level
from nightshift.plan_files import load_plan_folder
from nightshift.records import shot_rungs
from nightshift.shot_loop import Climb
from nightshift.versions import waiting_for

if TYPE_CHECKING:
    from nightshift.engine import NightEngine


class QueuePasses:
    def __init__(self, engine: NightEngine) -> None:
        self.engine = engine

    def climb(self, job: Job, alone: bool = False) -> Climb | None:
        """A progressive job's pass: its lowest rung still needed (None: a one-rung ladder, the plain loop)."""
        if not job.rungs or len(job.rungs) < 2:
            return None
        need = self.job_need(job)
        return Climb(tuple(job.rungs), len(job.rungs) - 1 if need is None else need,
                     frozenset(self.engine.night.marked(job)), alone)

    def climbs(self, job: Job) -> bool:
        """Does `job` climb a ladder of more than one rung (before it starts: as its renderer is asked for)?"""
        if job.rungs is not None:
            return len(job.rungs) > 1
        asked = self.engine.renderer or self.engine.settings.render.renderer
        return len(ladder_for("animatic" if asked == "animatic" else asked, self.engine.settings)) > 1

    def job_need(self, job: Job) -> int | None:
        """The lowest pass `job` still needs: 0 for one not started (or unreadable), None when every shot is at
        its last rung (what is left is its delivery)."""
        folder = Path(job.work_folder)
        if job.rungs is None:
            return 0
        try:
            _, plan = load_plan_folder(folder)
            rungs = shot_rungs(folder, plan.specs, self.engine.verified)
        except (NightshiftError, OSError, ValueError):
            return 0
        return needed_level({shot: level_of(rung, job.rungs) for shot, rung in rungs.items()}, job.rungs)

    def queue_level(self) -> int | None:
        """The pass the queue is on for this process: the lowest any job it can work on now still needs (every
        draft before any final). A job backing off, waiting for its parent version, or whose shots below that
        pass all render elsewhere does not hold this machine back."""
        engine = self.engine
        needs = [need for job in engine.store.pending() if engine.trusted(job) and waiting_for(job, engine.store) is None
                 and time.monotonic() >= engine.retry_at.get(job.id, 0.0)
                 and (need := self.job_need(job)) is not None and engine.has_work_here(job)]
        return min(needs) if needs else None

    def lower_pass_due(self, level: int) -> bool:
        found = self.queue_level()
        return found is not None and found < level
