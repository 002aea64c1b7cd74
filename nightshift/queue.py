"""The render queue as the user sees it: what renders next, how far each job is, and user priorities.

Order: higher priority first, then arrival (the time the script was claimed and planned). The
serving loop reads this order again before each job, so a priority set mid-night takes effect at
the next job; the job rendering now is never interrupted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from nightshift.config import Settings
from nightshift.engine import NightEngine
from nightshift.errors import NightshiftError
from nightshift.inbox import CLAIMED, is_candidate, original_name, pending_files
from nightshift.jobs import Job, JobStore
from nightshift.plan_files import load_plan_folder
from nightshift.records import shots_not_done


@dataclass(frozen=True)
class QueueEntry:
    position: int | None  # 1 = renders next; None for delivered and failed jobs
    priority: int
    state: str
    shots_done: int | None  # None when the plan folder cannot be read
    shots_total: int | None
    arrived: str
    job_id: str
    script_name: str
    title: str
    redo_of: str | None = None  # for a job made from review marks: the delivery it makes a new version of
    redo_shots: list[str] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _shot_counts(job: Job) -> tuple[int | None, int | None]:
    """Shots done and to do: the whole plan, or for a redo job only the shots it renders again."""
    folder = Path(job.work_folder)
    if job.redo is not None:
        total = len(job.redo.shots)
        if job.state == "delivered":
            return total, total
        if not folder.is_dir():
            return 0, total
    try:
        _, plan = load_plan_folder(folder)
        if job.state == "delivered":
            return len(plan.specs), len(plan.specs)
        specs = [s for s in plan.specs if job.redo is None or s.shot_id in job.redo.shots]
        return len(specs) - len(shots_not_done(folder, specs)), len(specs)
    except (NightshiftError, OSError, ValueError):
        return None, None


def queue_entries(store: JobStore, include_finished: bool = False) -> list[QueueEntry]:
    """Pending jobs in render order; with `include_finished`, delivered and failed jobs after them."""
    priorities = store.priorities()
    pending = store.pending()
    jobs: list[tuple[int | None, Job]] = list(enumerate(pending, start=1))
    if include_finished:
        jobs += [(None, j) for j in store.all() if j.state in ("delivered", "failed")]
    entries = []
    for position, job in jobs:
        done, total = _shot_counts(job)
        entries.append(QueueEntry(position, priorities.get(job.id, 0), job.state, done, total, job.created,
                                  job.id, job.script_name, job.title, job.redo.parent if job.redo else None,
                                  list(job.redo.shots) if job.redo else None))
    return entries


def waiting_scripts(settings: Settings) -> list[tuple[str, str]]:
    """Scripts not planned yet: (name, where). Read-only, so it is safe while `nightshift serve` runs."""
    engine = NightEngine(settings)
    inbox = engine.inbox
    waiting = [(original_name(p), "in the inbox") for p in pending_files(inbox) if is_candidate(p)[0]]
    planned = {Path(j.claimed_path) for j in engine.store.all()}
    claimed = inbox / CLAIMED
    for holder in sorted(claimed.iterdir()) if claimed.is_dir() else []:
        if holder.is_dir() and not holder.name.startswith("."):
            waiting += [(original_name(f), "claimed, planning not finished (retried by serve, e.g. after a full disk)")
                        for f in sorted(holder.iterdir()) if f.is_file() and not f.name.startswith(".")
                        and f not in planned]
    return waiting


def find_job(store: JobStore, reference: str) -> Job:
    """A job by id, unique id prefix, script name or title; an error lists the candidates otherwise."""
    jobs = store.all()
    for matches in ([j for j in jobs if j.id == reference],
                    [j for j in jobs if j.script_name == reference or j.title == reference],
                    [j for j in jobs if j.id.startswith(reference)]):
        # A script dropped again after a failure has several jobs: the pending one is meant.
        pending = [j for j in matches if j.state in ("queued", "rendering")]
        if len(pending) == 1 or len(matches) == 1:
            return pending[0] if len(pending) == 1 else matches[0]
        if len(matches) > 1:
            listed = ", ".join(f"{j.id} ({j.script_name}, {j.state})" for j in matches)
            raise NightshiftError(f"{reference!r} matches {len(matches)} jobs: {listed}", "give the full job id")
    raise NightshiftError(f"no job matches {reference!r}",
                          "run `nightshift queue --all` to see job ids, script names and titles")


def set_priority(settings: Settings, reference: str, priority: int) -> Job:
    """Give a queued job a priority (higher renders sooner; 0 is the default, negatives wait)."""
    store = NightEngine(settings).store
    job = find_job(store, reference)
    if job.state not in ("queued", "rendering"):
        raise NightshiftError(f"{job.script_name} (job {job.id}) is already {job.state}; its priority cannot change",
                              "drop the script into the inbox again to render it again")
    store.set_priority(job.id, priority)
    return job


def format_queue(entries: list[QueueEntry], waiting: list[tuple[str, str]] | None = None,
                 unreadable: list[Path] | None = None) -> str:
    notes = [f"not planned yet: {name} ({where})" for name, where in waiting or []]
    notes += [f"unreadable job file (not rendered until fixed or removed): {path}" for path in unreadable or []]
    if not entries:
        return "\n".join(["The queue is empty.", *notes])
    lines = [f"{'#':>3}  {'prio':>4}  {'state':<9}  {'shots':>7}  {'arrived':<19}  {'job':<34}  script"]
    for e in entries:
        shots = f"{e.shots_done}/{e.shots_total}" if e.shots_total is not None else "?"
        lines.append(f"{e.position if e.position is not None else '-':>3}  {e.priority:>4}  {e.state:<9}  {shots:>7}  "
                     f"{e.arrived[:19]:<19}  {e.job_id:<34}  {e.script_name}"
                     + (f"  (redo {', '.join(e.redo_shots or [])} of {e.redo_of}: a new version)" if e.redo_of else ""))
    return "\n".join(lines + notes)
