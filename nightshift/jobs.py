"""The durable render queue: one JSON file per job under <project>/.nightshift/jobs/.

Every state change is written atomically before the work it announces starts,
so a killed process leaves a queue that says exactly what is done and what is
not. The queue is read back in arrival order on every start, higher user
priorities first (`nightshift queue --priority`). Priorities live in their own
file, written only by the user's command, so a serving process saving a job can
never undo a priority set while it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from nightshift.files import write_atomic
from nightshift.schemas import NAME_MAX, TITLE_MAX, Rung

JobState = Literal["queued", "rendering", "delivered", "failed"]


JOB_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{10}-[0-9a-f]{6}$"


class RedoOrder(BaseModel):
    """What a job made from a review renders: the marked shots of one delivery, into a new version of it."""

    parent: str = Field(max_length=4096, description="The delivery folder this version is made from.")
    after_job: str | None = Field(None, pattern=JOB_ID_PATTERN,
                                  description="A redo job still rendering the parent's own new version: wait for it, "
                                              "and make this version from that one.")
    shots: list[str] = Field(description="The shots to render again, in the order marked.")
    marks: list[dict] = Field(default_factory=list, description="The review marks this job carries out (edits.Mark).")
    from_folder: str | None = Field(None, max_length=4096,
                                    description="The delivery folder the version was made from, fixed when it starts.")


class Job(BaseModel):
    id: str = Field(pattern=JOB_ID_PATTERN)
    script_name: str = Field(max_length=NAME_MAX)
    script_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    claimed_path: str = Field(max_length=4096)
    title: str = Field("", max_length=TITLE_MAX)
    state: JobState = "queued"
    work_folder: str
    created: str
    night_started: str | None = Field(None, description="Local date-time the first render of this job started.")
    delivery: str | None = None
    delivered_by: str | None = Field(None, description="Which process on which host delivered it.")
    delivering_to: str | None = Field(None, description="Set just before the rename into output/, for crash recovery.")
    error: str | None = None
    renderer: str | None = None
    history: list[str] = Field(default_factory=list)
    redo: RedoOrder | None = Field(None, description="Set for a job made from review marks: a new version of a delivery.")
    rungs: list[Rung] | None = Field(None, description="The quality ladder its shots climb (set when it starts).")
    cut: str | None = Field(None, description="A progressive night: the job's latest cut in output/, complete with "
                                              "every shot at its best rung so far; updated within a night.")
    cut_night: str | None = Field(None, description="The night (when its window opened) that cut belongs to: a "
                                                    "later night's cut is a new version beside it.")
    cut_parent: str | None = Field(None, description="The earlier night's cut this night's version builds on.")
    cut_shots: dict[str, str] = Field(default_factory=dict, description="Shot -> the clip's sha256 in that cut.")
    cut_made: float | None = Field(None, description="When that cut was made (Unix time).")
    publishing_to: str | None = Field(None, description="Set just before a cut is swapped into place (recovery).")
    publishing_night: str | None = Field(None, description="The night that cut belongs to, set with publishing_to.")

    @property
    def label(self) -> str:
        """What the job is, for run names and lists: the film, or for a redo the film and its shots."""
        name = self.title or self.script_name
        if self.redo is None:
            return name
        return f"{name}: redo {', '.join(self.redo.shots)}"

    def log(self, message: str) -> None:
        self.history.append(f"{datetime.now().isoformat(timespec='seconds')} {message}")


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def save(self, job: Job) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(job.id), job.model_dump_json(indent=2))

    def load(self, job_id: str) -> Job:
        job = Job.model_validate_json(self.path(job_id).read_text(encoding="utf-8"))
        if job.id != job_id:
            raise ValueError(f"{self.path(job_id)} holds job {job.id!r}: the file was renamed or edited by hand")
        return job

    def _read_all(self) -> tuple[list[Job], list[Path]]:
        jobs, unreadable = [], []
        for path in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            if path.name.startswith("."):
                continue  # a write in progress (files.atomic_output)
            try:
                jobs.append(self.load(path.stem))
            except (ValueError, OSError):
                unreadable.append(path)
        return sorted(jobs, key=lambda j: (j.created, j.id)), unreadable

    def all(self) -> list[Job]:
        """Every readable job in arrival order. One that cannot be read (hand-edited, say) is not fatal
        here; `nightshift queue` lists it (`unreadable`)."""
        return self._read_all()[0]

    def unreadable(self) -> list[Path]:
        return self._read_all()[1]

    @property
    def priorities_path(self) -> Path:
        return self.root.parent / "priorities.json"

    def priorities(self) -> dict[str, int]:
        """Job id -> priority as the user set it (default 0); an unreadable file counts as none set."""
        try:
            data = json.loads(self.priorities_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}

    def set_priority(self, job_id: str, priority: int) -> None:
        import fcntl

        if not self.path(job_id).is_file():
            raise KeyError(job_id)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / "priorities.lock", "a") as lock:  # two commands at once: neither change lost
            fcntl.flock(lock, fcntl.LOCK_EX)
            priorities = self.priorities()
            if priority == 0:
                priorities.pop(job_id, None)
            else:
                priorities[job_id] = priority
            write_atomic(self.priorities_path, json.dumps(priorities, indent=2, sort_keys=True))

    def pending(self) -> list[Job]:
        """Queued and rendering jobs in the order they will render: higher priority first, then arrival."""
        priorities = self.priorities()
        waiting = [j for j in self.all() if j.state in ("queued", "rendering")]
        return sorted(waiting, key=lambda j: -priorities.get(j.id, 0))  # stable: arrival order within a priority

    def next_pending(self, tried: set[str], climbs: Callable[[Job], bool] | None = None) -> Job | None:
        """The next job to render, read fresh from disk so a priority set or a script planned mid-night counts.
        With `climbs` (a progressive night's first pass): the jobs it says climb a ladder in arrival order, after
        those whose one rung is final (which keep the queue's priority order)."""
        pending = self.pending()
        if climbs is not None:
            pending.sort(key=lambda j: (1, j.created, j.id) if climbs(j) else (0, "", ""))
        return next((j for j in pending if j.id not in tried), None)

    def find_sha(self, sha256: str) -> Job | None:
        """A job for the same content that is queued, rendering or delivered (a failed one may be retried)."""
        return next((j for j in self.all() if j.script_sha256 == sha256 and j.state != "failed"), None)

    def find_claim(self, claimed_path: Path) -> Job | None:
        return next((j for j in self.all() if Path(j.claimed_path) == claimed_path), None)
