"""The night engine: one state machine over durable jobs, and the one loop that runs it.

    claim -> plan -> queue -> render each shot -> deliver -> settle

`nightshift serve`, `nightshift run`, `nightshift render` (nightshift/plan_render.py), the Prefect
flows (flows/night.py) and the fault suites all drive `NightEngine`; its shot loop is
nightshift/shot_loop.py, a job's delivery nightshift/job_delivery.py. Prefect only wraps its steps (`Steps`: flow and
task runs, names, logs, artifacts); it never re-implements them.

Ownership holds across processes and machines that share the studio folder (nightshift/leases.py):
a claim is planned only under its lease; a job is started, delivered or failed only under its lease;
each shot is rendered only under its own lease, so machines render one job's shots side by side (a
feature is spread over every GPU, not left on one), and whichever renders the last shot delivers;
a GPU is used only under its machine lock. Every step is written down before the work it announces,
so a process or a machine killed anywhere leaves a studio the next start (or another machine, once
the dead one's leases expire) finishes without loss or repeat: only what has no finished, verified
output is done again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import watchfiles

from nightshift.config import Settings
from nightshift.cuts import CutPublisher
from nightshift.errors import NightshiftError, NightWaits, ShotFailed
from nightshift.files import inside
from nightshift.inbox import Claim, is_candidate, leftover_claims, pending_files
from nightshift.intake import Intake
from nightshift.job_delivery import JobDelivery
from nightshift.jobs import Job, JobStore
from nightshift.ladder import ladder_for, level_of, needed_level
from nightshift.leases import HOST, LeaseBook, Owner, lease_key
from nightshift.night_book import NightBook
from nightshift.passes import QueuePasses
from nightshift.plan_files import load_plan_folder
from nightshift.records import VerifiedClips, shot_rungs, shots_not_done
from nightshift.renderers.continuity import continues_from
from nightshift.renderers.shots import RendererChoice, choose_renderer
from nightshift.schemas import RenderPlan
from nightshift.seal import FINISH_STEPS, Report
from nightshift.shot_loop import ShotLoop, shot_key
from nightshift.versions import start_version, waiting_for
from nightshift.steps import (PROCESS_PROGRESS, PROCESS_STOP, IntakeOutcome, JobOutcome, Progress, ProgressBoard, Steps,
                              Stop, backoff_s, in_window)

log = logging.getLogger("nightshift.engine")


@dataclass
class NightEngine:
    settings: Settings
    steps: Steps = field(default_factory=Steps)
    renderer: str | None = None  # auto | diffusers | animatic; None: render.renderer
    respect_window: bool = True
    stop: Stop = PROCESS_STOP
    say: Callable[[str], None] = log.info
    board: ProgressBoard = PROCESS_PROGRESS

    def __post_init__(self) -> None:
        self.intake = Intake(self)
        studio = self.settings.resolve(Path(".nightshift"))
        self.store = JobStore(studio / "jobs")
        self.leases = LeaseBook.of(studio / "leases", self.settings.night.lease_ttl_s)
        self.delivery = JobDelivery(self)
        self.shots = ShotLoop(self)
        self.cuts = CutPublisher(self)
        self.night = NightBook(self)
        self.passes = QueuePasses(self)
        self.verified = VerifiedClips()
        self.work_root = studio / "work"
        self.inbox = self.settings.resolve(self.settings.paths.inbox)
        self.output = self.settings.resolve(self.settings.paths.output)
        self.tampered: set[str] = set()
        self.retry_at: dict[str, float] = {}  # job or claim -> when it is tried again (backing off, never dropped)
        self.failures: dict[str, int] = {}
        self.disk_full = 0
        self.disk_retry_at = 0.0

    # ------------------------------------------------------------------ trust

    def untrusted(self, job: Job) -> str | None:
        """Why a job record cannot be acted on: a path in it that leaves the studio (None: it is trustworthy)."""
        try:
            if job.redo is None:
                inside(job.claimed_path, self.inbox, what=f"job {job.id}: claimed_path")
            else:
                inside(self.output / job.redo.parent, self.output, what=f"job {job.id}: redo.parent")
                if job.redo.from_folder is not None:
                    inside(job.redo.from_folder, self.output, what=f"job {job.id}: redo.from_folder")
            inside(job.work_folder, self.work_root, self.output, what=f"job {job.id}: work_folder")
            for value, name in ((job.delivery, "delivery"), (job.delivering_to, "delivering_to"), (job.cut, "cut"),
                                (job.cut_parent, "cut_parent"), (job.publishing_to, "publishing_to")):
                if value is not None:
                    inside(value, self.output, what=f"job {job.id}: {name}")
        except NightshiftError as error:
            return error.report()
        return None

    def trusted(self, job: Job) -> bool:
        """Every path in a job record must stay inside the studio; a record that says otherwise is never acted on."""
        why = self.untrusted(job)
        if why is not None and job.id not in self.tampered:
            self.tampered.add(job.id)
            self.say(f"tampered job record {self.store.path(job.id)}: {why}")
        return why is None

    def tampered_jobs(self) -> list[tuple[Job, str]]:
        return [(job, why) for job in self.store.all() if (why := self.untrusted(job)) is not None]

    # ------------------------------------------------------------------ rendering

    def choose(self, plan: RenderPlan) -> RendererChoice:
        return choose_renderer(self.renderer or self.settings.render.renderer, plan, self.settings.render)

    def window_open(self) -> bool:
        return not self.respect_window or in_window(datetime.now(), self.settings.night.window_start,
                                                    self.settings.night.window_end)

    def work_job(self, job_id: str, alone: bool = False) -> JobOutcome:
        """Render the job's shots no one else is rendering, then deliver it if every shot is done. Its lease
        is held to start it and to deliver or fail it; each shot has a lease of its own while it renders. A job
        whose lease is held elsewhere is left ("busy"); one whose last shots render elsewhere is left to that
        machine ("elsewhere"); one already delivered, by anyone, is reported ("delivered_elsewhere"). A
        progressive job renders one pass ("cut": its cut is made or brought up to date; "yield": a job planned
        meanwhile needs a lower pass first, unless `alone`, as `nightshift run` renders one script)."""
        started = self._start_job(job_id)
        if isinstance(started, JobOutcome):
            return started
        job, plan, choice = started
        folder = Path(job.work_folder)
        climb = self.passes.climb(job, alone)
        try:
            with self.steps.gpu(self, choice.device):
                stopped = self.shots.render(folder, folder, plan, choice, job=job, climb=climb)
        except InterruptedError:
            stopped = "stopped"
        except NightWaits as error:
            with self.leases.hold(job_key(job.id), what=f"pausing job {job.id}"):
                self.delivery.pause(self.store.load(job.id), error.report())
            raise  # the whole queue waits for space or the render server (render_queue backs off)
        except ShotFailed as error:
            if self.stop.is_set():
                stopped = "stopped"
            else:
                with self.leases.hold(job_key(job.id), what=f"failing job {job.id}"):
                    self.delivery.fail(self.store.load(job.id), "rendering", error.report())
                return JobOutcome(job.id, "failed", f"{job.script_name}: failed: {error}")
        if stopped == "yield":
            message = f"{job.label}: a job planned meanwhile gets its {climb.ladder[0] if climb else 'first'} pass first"
            return JobOutcome(job.id, "yield", message)
        if stopped in ("stopped", "window"):
            if climb is not None and stopped == "window":
                self.cuts.keep_up(job.id, force=True)  # the cut at dawn shows every final that landed
            why = ("stopped; it resumes where it stopped on the next start" if stopped == "stopped"
                   else f"the window closed at {self.settings.night.window_end}; the rest waits for the next night")
            self.say(f"{job.script_name}: {why}")
            return JobOutcome(job.id, "stopped" if stopped == "stopped" else "waiting", f"{job.script_name}: {why}")
        return self._finish_job(job.id)

    def _start_job(self, job_id: str) -> JobOutcome | tuple[Job, RenderPlan, RendererChoice]:
        """Under the job's lease: check the record, finish a delivery a kill interrupted, make a redo's
        version folder, choose the renderer and say the job is rendering (and where)."""
        lease = self.leases.take(job_key(job_id), what=f"starting job {job_id}")
        if isinstance(lease, Owner):
            return JobOutcome(job_id, "busy", f"job {job_id} is being started or delivered by {lease.describe()}")
        with lease:
            job = self.store.load(job_id)
            if not self.trusted(job):
                return JobOutcome(job_id, "failed", f"job {job_id}: the record is tampered with; not acted on")
            finished = self.delivery.finish_interrupted(job)
            self.cuts.adopt_interrupted(job)
            if finished is not None:
                return JobOutcome(job_id, "delivered", f"{job.script_name}: delivered to {finished}", str(finished))
            settled = self._settled(job)
            if settled is not None:
                return settled
            folder = Path(job.work_folder)
            try:
                if job.redo is not None and not folder.is_dir():
                    start_version(job, self.store, self.output, self.settings)
                _, plan = load_plan_folder(folder)
                choice = self.choose(plan)
            except NightshiftError as error:  # a damaged plan, a model that is not here: reported, not retried
                self.delivery.fail(job, "rendering", error.report())
                return JobOutcome(job.id, "failed", f"{job.script_name}: failed: {error}")
            if job.night_started is None:
                job.night_started = datetime.now().isoformat(timespec="seconds")
            job.state, job.renderer = "rendering", f"{choice.kind}: {choice.reason}"
            job.rungs = ladder_for(choice.kind, self.settings)
            job.log(f"rendering with {choice.kind} ({choice.reason}) on {HOST}")
            self.store.save(job)
        self.say(f"{job.script_name}: renderer {choice.kind} ({choice.reason})")
        return job, plan, choice

    @staticmethod
    def _settled(job: Job) -> JobOutcome | None:
        if job.state == "delivered":
            return JobOutcome(job.id, "delivered_elsewhere",
                              f"{job.script_name}: delivered by {job.delivered_by or 'an earlier run'} to {job.delivery}",
                              job.delivery)
        if job.state == "failed":
            return JobOutcome(job.id, "failed", f"{job.script_name}: this job failed ({job.error}); "
                                                "fix the script and drop it again")
        return None

    def _finish_job(self, job_id: str) -> JobOutcome:
        """Under the job's lease: deliver it when every shot is done; else say where its last shots render."""
        lease = self.leases.take(job_key(job_id), what=f"delivering job {job_id}")
        if isinstance(lease, Owner):
            return JobOutcome(job_id, "busy", f"job {job_id} is being delivered by {lease.describe()}")
        with lease:
            job = self.store.load(job_id)
            settled = self._settled(job)
            if settled is not None:
                return settled
            folder = Path(job.work_folder)
            _, plan = load_plan_folder(folder)
            if job.rungs and len(job.rungs) > 1:
                return self.cuts.finish_pass(job, plan)
            left = shots_not_done(folder, plan.specs, self.verified)
            if left:
                owners = {owner.host for spec in left if (owner := self.leases.busy(shot_key(job.id, spec.shot_id)))}
                where = ", ".join(sorted(owners)) or "no machine yet"
                message = (f"{job.script_name}: {len(left)} shot(s) left, rendering on {where}; "
                           "the machine that renders the last one delivers")
                self.say(message)
                return JobOutcome(job.id, "elsewhere", message)
            try:
                delivered = self.steps.deliver(job.label, lambda: self.delivery.deliver(job))
            except NightWaits:
                raise  # deliver paused the job; the whole queue waits for space (render_queue backs off)
            except NightshiftError as error:  # e.g. signing: reported once, not retried every poll; the shots are kept
                self.delivery.fail(self.store.load(job.id), "delivery", error.report())
                return JobOutcome(job.id, "failed", f"{job.script_name}: delivery failed: {error}")
        self.steps.delivered(self.store.load(job.id), delivered)
        return JobOutcome(job.id, "delivered", f"{job.script_name}: delivered to {delivered}", str(delivered))

    def progress(self, job: Job | None, folder: Path, event: Progress) -> None:
        self.steps.progress(job, folder, event)
        self.board.publish(event)

    def finishing(self, job: Job | None, folder: Path, plan: RenderPlan, sealing: bool = True) -> Report:
        """The report the finishing steps give (assembly, timeline, and when sealing, signing and the record):
        a log line as each starts and ends, and progress that reaches 100% only when the last one is done."""
        steps = FINISH_STEPS if sealing else FINISH_STEPS[:2]
        total = len(plan.specs) + len(steps)

        def report(step: str, fraction: float, detail: str) -> None:
            if fraction >= 1.0:
                self.say(f"{plan.title}: {step}: done{f' ({detail})' if detail else ''}")
            elif fraction == 0.0:
                self.say(f"{plan.title}: {step}")
            units = len(plan.specs) + steps.index(step) + fraction
            self.progress(job, folder, Progress(plan.title, step, units, total, detail))

        return report

    # ------------------------------------------------------------------ the loop

    def next_job(self, tried: set[str], level: int | None = None) -> Job | None:
        """The next job this process may work on now: pending, trusted, not backing off, with something to do
        here at the queue's pass `level` (a shot no one renders, or its delivery)."""
        # A progressive night's first pass goes in arrival order: priorities and marks order finals, not drafts.
        climbs = self.passes.climbs if level == 0 and self.settings.night.strategy == "progressive" else None
        while (job := self.store.next_pending(tried, climbs)) is not None:
            tried.add(job.id)
            if not self.trusted(job) or time.monotonic() < self.retry_at.get(job.id, 0.0):
                continue
            if waiting_for(job, self.store) is not None:
                continue  # the version it builds on is not delivered yet
            if self.has_work_here(job, level):
                return job
        return None

    def has_work_here(self, job: Job, level: int | None = None) -> bool:
        """Can this process do something for `job` now: start it, render a shot no one else renders (one whose
        first frame is not the end of a shot rendering elsewhere), or deliver it? Finished clips are stat'ed,
        not hashed again, so a machine can ask this of the whole queue every few seconds. With `level` (the
        queue's pass), a job whose shots all stand above it waits for the next pass."""
        if self.leases.busy(job_key(job.id)) is not None:
            return False
        folder = Path(job.work_folder)
        try:
            _, plan = load_plan_folder(folder)
            if job.rungs and len(job.rungs) > 1:
                levels = {s: level_of(r, job.rungs) for s, r in shot_rungs(folder, plan.specs, self.verified).items()}
                need = needed_level(levels, job.rungs)
                if need is not None and level is not None and need > level:
                    return False
                left = [spec for spec in plan.specs if need is not None and levels[spec.shot_id] < need]
            else:
                left = shots_not_done(folder, plan.specs, self.verified)
        except (NightshiftError, OSError, ValueError):
            return True  # a redo not started yet, or a damaged plan: work_job starts it or reports it
        elsewhere: set[str] = set()
        for spec in left:
            if continues_from(spec) in elsewhere or self.leases.busy(shot_key(job.id, spec.shot_id)) is not None:
                elsewhere.add(spec.shot_id)
        return not left or len(elsewhere) < len(left)

    def render_queue(self, limit: int | None = None) -> list[JobOutcome]:
        """Every job this process can render now (at most `limit`), higher priority first, read again before each."""
        outcomes: list[JobOutcome] = []
        if time.monotonic() < self.disk_retry_at:
            return outcomes
        tried_at: dict[int | None, set[str]] = {}  # per pass: a progressive job comes back for its next one
        while not self.stop.is_set() and self.window_open():
            level = self.passes.queue_level()
            if level is not None:  # a job planned meanwhile took the queue down a pass: those above start over
                tried_at = {k: v for k, v in tried_at.items() if k is None or k <= level}
            job = self.next_job(tried_at.setdefault(level, set()), level)
            if job is None:
                break
            try:
                outcome = self.steps.job(self, job)
            except NightWaits as error:
                # Every job needs the same disk (and render server): pause the whole queue and look again later.
                self.disk_full += 1
                delay = backoff_s(self.disk_full)
                self.disk_retry_at = time.monotonic() + delay
                self.say(f"{job.script_name}: {error.report()}\nThe queue waits; next try in {delay:.0f} s.")
                break
            except Exception as error:  # noqa: BLE001 - the night goes on; the job stays queued for a retry
                # Not the script's fault as far as we know (the Prefect server restarting ...): keep it queued.
                self.failures[job.id] = self.failures.get(job.id, 0) + 1
                delay = backoff_s(self.failures[job.id])
                self.retry_at[job.id] = time.monotonic() + delay
                self.say(f"{job.script_name}: render stopped unexpectedly ({error!r}); it stays queued, "
                         f"next try in {delay:.0f} s")
                continue
            self.disk_full = 0
            self.say(outcome.message)
            outcomes.append(outcome)
            if outcome.status in ("stopped", "waiting") or (limit is not None and len(outcomes) >= limit):
                break
        return outcomes

    def render_night(self) -> list[JobOutcome]:
        """One machine's night under a work pool (flows/night.py `overnight`): render what this machine can
        lease, pass after pass, until the window closes (jobs that arrive meanwhile are rendered too) or, when
        the window is not respected, until every job is delivered or failed. Work other machines hold is
        waited for, not left: a machine that dies is taken over once its leases expire."""
        outcomes: list[JobOutcome] = []
        while not self.stop.is_set() and self.window_open():
            self.night.begin()
            outcomes += self.render_queue()
            if not self.respect_window and not any(self.trusted(job) for job in self.store.pending()):
                break
            self.stop.wait(self.settings.night.poll_s)
        self.night.end()
        return outcomes

    def idle(self) -> bool:
        drops = [p for p in pending_files(self.inbox) if is_candidate(p)[0]]
        return not drops and not leftover_claims(self.inbox) and not self.store.pending()

    def serve(self, once: bool = False, intake: bool = True, render: bool = True,
              events: Callable[[Claim], None] | None = None) -> list[JobOutcome]:
        """The night: take complete drops, plan them, render the queue inside the window, deliver; until
        stopped (or, with `once`, until the inbox and the queue are empty or hold only others' work)."""
        outcomes: list[JobOutcome] = []
        self.inbox.mkdir(parents=True, exist_ok=True)
        poll_ms = int(self.settings.night.poll_s * 1000)
        while not self.stop.is_set():
            if intake:
                self.intake.take_drops(events=events)
            if render and not self.stop.is_set() and not self.window_open():
                self.night.end()  # the window closed: the night's summary (once)
            if render and not self.stop.is_set() and self.window_open():
                self.night.begin()
                # While drops wait to be planned, one job between intake passes: planning and rendering take turns,
                # so neither a large drop nor a long queue holds the other back.
                outcomes += self.render_queue(limit=1 if intake and self.intake.has_waiting_drops() else None)
            if once and (self.idle() or self._only_others_work(intake)):
                break
            if self.stop.is_set():
                break
            # Wake on any inbox change, or after poll_s to re-check sizes, the window and other owners' work.
            for _ in watchfiles.watch(self.inbox, stop_event=self.stop.event, rust_timeout=poll_ms,
                                      yield_on_timeout=True, recursive=False, raise_interrupt=True):
                break
        if render:
            self.night.end()
        return outcomes

    def _only_others_work(self, intake: bool) -> bool:
        """With `once`: nothing in the inbox, and every claim and job left is another live owner's (or tampered)."""
        if intake and [p for p in pending_files(self.inbox) if is_candidate(p)[0]]:
            return False
        queued = {Path(j.claimed_path) for j in self.store.pending()}
        if intake and any(self.leases.busy(lease_key("claim", p.parent.name)) is None
                          for p in leftover_claims(self.inbox) if p not in queued):
            return False
        return all(not self.has_work_here(j) or not self.trusted(j)
                   or waiting_for(j, self.store) is not None for j in self.store.pending())

    def run_claim(self, claimed: Path, force: bool = False) -> JobOutcome | IntakeOutcome:
        """`nightshift run`: this one script, now: plan it, render it, deliver it."""
        outcome = self.intake.claim(claimed, force=force)
        if outcome.job is None or outcome.status == "failed":
            return outcome
        rendered = self.work_job(outcome.job.id, alone=True)
        while rendered.status == "cut" and not self.stop.is_set():  # a progressive job: its next pass, at once
            rendered = self.work_job(outcome.job.id, alone=True)
        return rendered


def job_key(job_id: str) -> str:
    return lease_key("job", job_id)


