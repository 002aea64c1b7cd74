"""Intake: complete drops in the inbox -> claims -> plans -> queued jobs (the first steps of the night engine).

A drop is taken only when complete (nightshift/inbox.py), claimed by an atomic rename, and planned
under the claim's lease, so two processes on one studio never plan it twice; the same content
dropped twice at once is planned once (a lease on its sha256). A reason that is not the script's
(a full disk, the Prefect server away) leaves it claimed with a note saying why, tried again with a
growing wait; a script's own problem sends it to inbox/failed/ with a report.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from nightshift import faults
from nightshift.errors import NightshiftError, is_disk_full
from nightshift.files import inside, sha256_file
from nightshift.inbox import (Claim, StabilityTracker, claim, is_candidate, leftover_claims, note_waiting,
                              open_for_writing, original_name, pending_files, settle)
from nightshift.jobs import Job
from nightshift.leases import Owner, lease_key
from nightshift.planning_job import plan_script_file
from nightshift.steps import IntakeOutcome, backoff_s

if TYPE_CHECKING:
    from nightshift.engine import NightEngine

INTAKE_BUDGET_S = 5.0  # a large drop is planned a few seconds at a time, between jobs: queued work keeps rendering


class Intake:
    """The engine's intake; shares its studio, steps, stop request and retry book."""

    def __init__(self, engine: NightEngine) -> None:
        self.engine = engine
        self.tracker = StabilityTracker(engine.settings.night.stable_s)
        self.ignored: set[str] = set()

    def complete_drops(self) -> list[Path]:
        """Inbox files ready to be taken: script types, still for stable_s, not open for writing."""
        ready = []
        for path in pending_files(self.engine.inbox):
            ok, why = is_candidate(path)
            if not ok:
                if path.name not in self.ignored and path.name not in ("done", "failed", ".claimed"):
                    self.engine.say(f"inbox: leaving {original_name(path)} alone: {why}")
                    self.ignored.add(path.name)
                continue
            if self.tracker.ready(path) and not open_for_writing(path):
                ready.append(path)
        return ready

    def has_waiting_drops(self) -> bool:
        """Anything in the inbox, or claimed and not planned, that a pass could take now."""
        return (any(is_candidate(p)[0] for p in pending_files(self.engine.inbox))
                or bool(self.waiting_claims()))

    def take_drops(self, budget_s: float | None = None, events: Callable[[Claim], None] | None = None) -> int:
        """Claim and plan complete drops for up to `budget_s` (INTAKE_BUDGET_S); the rest wait for the next pass."""
        deadline, taken = time.monotonic() + (INTAKE_BUDGET_S if budget_s is None else budget_s), 0
        for claimed in self.waiting_claims():
            if self.engine.stop.is_set() or time.monotonic() > deadline:
                return taken
            self._intake(claimed)
        for path in self.complete_drops():
            if self.engine.stop.is_set() or time.monotonic() > deadline:
                break
            self.tracker.forget(path)
            taken_claim = claim(path, self.engine.inbox)
            if taken_claim is None:
                continue  # someone else took it first
            taken += 1
            if events is not None:
                events(taken_claim)
            else:
                self._intake(taken_claim.path)
        return taken

    def _intake(self, claimed: Path) -> None:
        """One claim through the intake step; what is not the script's fault (the Prefect server away) leaves it
        claimed, tried again later with a growing wait and a note beside it."""
        try:
            if self.engine.store.find_sha(sha256_file(claimed)) is not None:
                outcome = self.claim(claimed)  # a duplicate is settled here, in milliseconds: no flow run
            else:
                outcome = self.engine.steps.intake(self.engine, claimed, False)
        except Exception as error:  # noqa: BLE001 - one script never stops the service
            delay = self._back_off(claimed)
            if claimed.exists():
                note_waiting(claimed, f"{original_name(claimed)}: planning could not start ({error!r}); "
                                      f"it is tried again automatically (next try in {delay:.0f} s).\n")
            self.engine.say(f"{original_name(claimed)}: intake stopped ({error!r}); it stays claimed, next try in {delay:.0f} s")
            return
        if outcome.status == "waiting":  # a full disk: planned again later, waiting longer each time
            self.engine.say(f"{outcome.message}; next try in {self._back_off(claimed):.0f} s")
            return
        if outcome.status == "busy":  # another process is planning it (or the same content): look again soon
            self.engine.retry_at[str(claimed)] = time.monotonic() + 2.0
        self.engine.say(outcome.message)

    def _back_off(self, claimed: Path) -> float:
        """The retry book lives with the engine that serves the loop (a Prefect flow's engine is short-lived)."""
        key = str(claimed)
        self.engine.failures[key] = self.engine.failures.get(key, 0) + 1
        delay = backoff_s(self.engine.failures[key])
        self.engine.retry_at[key] = time.monotonic() + delay
        return delay

    def waiting_claims(self) -> list[Path]:
        """Claims nobody is planning: left by a killed process, or waiting for space or a server."""
        now, waiting = time.monotonic(), []
        jobs = {Path(j.claimed_path): j for j in self.engine.store.all()}  # read once: a large queue has many claims
        for path in leftover_claims(self.engine.inbox):
            job = jobs.get(path)
            if job is not None and job.state in ("queued", "rendering"):
                continue  # planned and queued: the job, not the claim, is the work now
            if now >= self.engine.retry_at.get(str(path), 0.0):
                waiting.append(path)
        return waiting

    def claim(self, claimed: Path, force: bool = False) -> IntakeOutcome:
        """Plan a claimed script into its job folder and queue it, under the claim's lease; duplicates and
        bad scripts are settled here. A reason not the script's (a full disk) leaves it claimed, with a note."""
        claimed = inside(claimed, self.engine.inbox / ".claimed", what="claimed script")
        lease = self.engine.leases.take(lease_key("claim", claimed.parent.name))
        if isinstance(lease, Owner):
            return IntakeOutcome(None, "busy", f"{original_name(claimed)}: being planned by {lease.describe()}")
        with lease:
            if not claimed.is_file():
                return IntakeOutcome(self.engine.store.find_claim(claimed), "duplicate", f"{claimed.name}: already settled")
            existing = self.engine.store.find_claim(claimed)
            if existing is not None and self.engine.trusted(existing):
                if existing.state in ("delivered", "failed"):  # killed after the job ended, before the move
                    ok = existing.state == "delivered"
                    self.engine.delivery.settle(existing, ok, None if ok else failure_report(
                        existing.script_name, "an earlier run", existing.error or "unknown"))
                    return IntakeOutcome(existing, "duplicate" if ok else "failed",
                                         f"{existing.script_name}: already {existing.state}")
                return IntakeOutcome(existing, "queued", f"{existing.script_name}: already queued as {existing.id}")
            name, digest = original_name(claimed), sha256_file(claimed)
            content = self.engine.leases.take(lease_key("script", digest))  # the same content dropped twice at once
            if isinstance(content, Owner):
                return IntakeOutcome(None, "busy", f"{name}: the same content is being planned by {content.describe()}")
            with content:
                return self._plan_claim(Claim(name, claimed, digest), force)

    def _plan_claim(self, taken: Claim, force: bool) -> IntakeOutcome:
        earlier = None if force else self.engine.store.find_sha(taken.sha256)
        if earlier is not None:
            where = earlier.delivery or f"job {earlier.id} ({earlier.state})"
            settled = settle(taken.path, self.engine.inbox, ok=True)
            (settled.parent / f"{settled.name}.duplicate.txt").write_text(
                f"{taken.original_name} has the same content (sha256 {taken.sha256}) as {earlier.script_name}, "
                f"already handled: {where}.\nNothing was planned or rendered again. To render it anyway, run:\n"
                f"  nightshift run --force {settled}\n", encoding="utf-8", errors="replace")
            return IntakeOutcome(earlier, "duplicate",
                                 f"{taken.original_name}: same content as {earlier.script_name}; not rendered again")
        job_id = (f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{taken.sha256[:10]}-"
                  f"{hashlib.sha256(str(taken.path).encode(errors='surrogateescape')).hexdigest()[:6]}")
        work = self.engine.work_root / job_id
        job = Job(id=job_id, script_name=taken.original_name, script_sha256=taken.sha256,
                  claimed_path=str(taken.path), work_folder=str(work),
                  created=datetime.now().isoformat(timespec="microseconds"))
        faults.reached("plan")
        try:
            # No storyboard yet: the delivery draws one from the rendered frames.
            result = self.engine.steps.plan(taken.original_name, lambda: plan_script_file(
                taken.path, self.engine.settings, out_dir=work, storyboard=False))
        except (NightshiftError, ValueError, OSError) as error:
            shutil.rmtree(work, ignore_errors=True)
            if is_disk_full(error):
                return self._wait_claim(taken, f"the disk is full; planning stopped ({error})")
            report = error.report() if isinstance(error, NightshiftError) else str(error)
            settle(taken.path, self.engine.inbox, ok=False, report=failure_report(taken.original_name, "planning", report))
            return IntakeOutcome(None, "failed", f"{taken.original_name}: {report}")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)  # stopped mid-plan: the claim stays and is planned again
            raise
        job.title = result.shotlist.title
        job.log(f"planned: {len(result.shotlist.shots)} shots by {result.shotlist.planner.kind}")
        faults.reached("queue")
        try:
            self.engine.store.save(job)
        except OSError as error:
            if not is_disk_full(error):
                raise
            shutil.rmtree(work, ignore_errors=True)
            return self._wait_claim(taken, f"the disk is full; the job could not be queued ({error})")
        return IntakeOutcome(job, "queued", f"{taken.original_name}: {len(result.shotlist.shots)} shots queued as {job.id}")

    def _wait_claim(self, taken: Claim, why: str) -> IntakeOutcome:
        note_waiting(taken.path, f"{taken.original_name}: {why}.\nNothing is failed: free disk space; it is planned "
                                 "again automatically (serve tries again, waiting longer each time, and on every start).\n")
        return IntakeOutcome(None, "waiting", f"{taken.original_name}: {why}; it stays claimed (free disk space)")


def failure_report(name: str, stage: str, detail: str) -> str:
    return (f"Nightshift could not finish {name} ({stage} failed, {datetime.now().isoformat(timespec='seconds')}).\n\n"
            f"{detail}\n\nThe script is kept here unchanged. Fix it and drop it into the inbox again.\n")
