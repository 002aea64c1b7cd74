"""The night engine: one state machine over durable jobs, and the one loop that runs it.

    claim -> plan -> queue -> render each shot -> deliver -> settle

`nightshift serve`, `nightshift run`, `nightshift render` (nightshift/plan_render.py), the Prefect
flows (flows/night.py) and the fault suites all drive `NightEngine`. Prefect only wraps its steps (`Steps`: flow and
task runs, names, logs, artifacts); it never re-implements them.

Ownership holds across processes and machines that share the studio folder: a claim is planned
only under its lease, a job is rendered and delivered only under its lease (nightshift/leases.py),
a GPU is used only under its machine lock. Every step is written down before the work it
announces, so a process killed anywhere leaves a studio the next start finishes without loss or
repeat: only what has no finished, verified output is done again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import watchfiles

from nightshift import faults
from nightshift.config import Settings
from nightshift.delivery import delivery_folder, move_into_place
from nightshift.errors import DiskFull, NightshiftError, ShotFailed, is_disk_full
from nightshift.files import inside, is_partial
from nightshift.inbox import Claim, is_candidate, leftover_claims, pending_files, settle
from nightshift.intake import Intake, failure_report
from nightshift.jobs import Job, JobStore
from nightshift.leases import HOST, LeaseBook, Owner, lease_key
from nightshift.plan_files import load_plan_folder
from nightshift.credentials import ShotSigner
from nightshift.provenance import MANIFEST_JSON
from nightshift.records import record_shot, shots_not_done, with_continuations
from nightshift.render_worker import RenderWorker, render_with_retries
from nightshift.renderers.shots import RendererChoice, choose_renderer
from nightshift.schemas import RenderPlan, RenderSpec, slugify
from nightshift.signing import SigningError
from nightshift.seal import FINISH_STEPS, Report, seal_delivery
from nightshift.versions import start_version, version_lineage, version_slug, waiting_for
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
        self.leases = LeaseBook.of(studio / "leases")
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
            for value, name in ((job.delivery, "delivery"), (job.delivering_to, "delivering_to")):
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

    def work_job(self, job_id: str) -> JobOutcome:
        """Render a job's remaining shots and deliver it, under the job's lease. Another owner's job is left
        to it ("busy"); one already delivered, by anyone, is reported ("delivered_elsewhere")."""
        lease = self.leases.take(lease_key("job", job_id), what=f"rendering job {job_id}")
        if isinstance(lease, Owner):
            return JobOutcome(job_id, "busy", f"job {job_id} is being rendered by {lease.describe()}")
        with lease:
            job = self.store.load(job_id)
            if not self.trusted(job):
                return JobOutcome(job_id, "failed", f"job {job_id}: the record is tampered with; not acted on")
            finished = self.finish_interrupted_delivery(job)
            if finished is not None:
                return JobOutcome(job_id, "delivered", f"{job.script_name}: delivered to {finished}", str(finished))
            if job.state == "delivered":
                return JobOutcome(job_id, "delivered_elsewhere",
                                  f"{job.script_name}: delivered by {job.delivered_by or 'an earlier run'} to {job.delivery}",
                                  job.delivery)
            if job.state == "failed":
                return JobOutcome(job_id, "failed", f"{job.script_name}: this job failed ({job.error}); "
                                                    "fix the script and drop it again")
            return self._render_and_deliver(job)

    def _render_and_deliver(self, job: Job) -> JobOutcome:
        folder = Path(job.work_folder)
        try:
            if job.redo is not None and not folder.is_dir():
                start_version(job, self.store, self.output, self.settings)
            _, plan = load_plan_folder(folder)
            choice = self.choose(plan)
        except NightshiftError as error:  # a damaged plan, a model that is not here: reported, not retried
            self.fail(job, "rendering", error.report())
            return JobOutcome(job.id, "failed", f"{job.script_name}: failed: {error}")
        if job.night_started is None:
            job.night_started = datetime.now().isoformat(timespec="seconds")
        job.state, job.renderer = "rendering", f"{choice.kind}: {choice.reason}"
        job.log(f"rendering with {choice.kind} ({choice.reason}) on {HOST}")
        self.store.save(job)
        self.say(f"{job.script_name}: renderer {choice.kind} ({choice.reason})")
        try:
            with self.steps.gpu(self, choice.device):
                stopped = self.render_shots(folder, folder, plan, choice, job=job)
        except InterruptedError:
            stopped = "stopped"
        except DiskFull as error:
            self._pause(job, error.report())
            raise  # the whole queue waits for space (render_queue backs off)
        except ShotFailed as error:
            if self.stop.is_set():
                stopped = "stopped"
            else:
                self.fail(job, "rendering", error.report())
                return JobOutcome(job.id, "failed", f"{job.script_name}: failed: {error}")
        if stopped:
            why = ("stopped; it resumes where it stopped on the next start" if stopped == "stopped"
                   else f"the window closed at {self.settings.night.window_end}; the rest waits for the next night")
            self.say(f"{job.script_name}: {why}")
            return JobOutcome(job.id, "stopped" if stopped == "stopped" else "waiting", f"{job.script_name}: {why}")
        try:
            delivered = self.steps.deliver(job.label, lambda: self.deliver(job))
        except DiskFull:
            raise  # deliver paused the job; the whole queue waits for space (render_queue backs off)
        except NightshiftError as error:  # e.g. signing: reported once, not retried every poll; the shots are kept
            self.fail(self.store.load(job.id), "delivery", error.report())
            return JobOutcome(job.id, "failed", f"{job.script_name}: delivery failed: {error}")
        self.steps.delivered(self.store.load(job.id), delivered)
        return JobOutcome(job.id, "delivered", f"{job.script_name}: delivered to {delivered}", str(delivered))

    def render_shots(self, plan_folder: Path, out_folder: Path, plan: RenderPlan, choice: RendererChoice,
                     specs: list[RenderSpec] | None = None, job: Job | None = None) -> str | None:
        """The one shot loop: each spec not done (or `specs`) through the render child, recorded as it lands.
        Returns "stopped" or "window" when it stopped early, None when every shot is done."""
        todo = specs if specs is not None else shots_not_done(out_folder, plan.specs)
        todo, chained = with_continuations(plan.specs, todo)  # a shot continuing one that renders renders after it
        total = len(plan.specs)
        done = total - len(todo)
        title = plan.title
        script_sha256 = load_plan_folder(plan_folder)[0].source_sha256
        # Progress counts the finishing steps too, so 100% means delivered (a plan folder is cut, not sealed).
        units = total + (len(FINISH_STEPS) if job is not None or (out_folder / MANIFEST_JSON).is_file() else 2)
        self.progress(job, out_folder, Progress(title, "rendering shots", done, units))
        signer = ShotSigner(self.settings)
        worker = RenderWorker()
        try:
            with self.stop.calling(worker.stop):
                for spec in todo:
                    if self.stop.is_set():
                        return "stopped"
                    if not self.window_open():
                        return "window"
                    self.say(f"{title}: {spec.shot_id} rendering ({done + 1}/{total})")
                    request = render_request(plan_folder, out_folder, spec.shot_id, choice, self.settings)
                    record = self.steps.shot(title, spec.shot_id, lambda: render_with_retries(
                        worker, request, self.settings.night.shot_timeout_s, self.settings.night.shot_retries,
                        self.say))
                    # Signed once, now: a shot's credentials describe only itself (nightshift/credentials.py).
                    try:
                        record = signer.sign(out_folder, record, spec, title, script_sha256)
                    except SigningError as error:  # a bad certificate fails the job once, not every poll
                        raise ShotFailed(f"{title}: {spec.shot_id} rendered but could not be signed: {error}",
                                         error.hint) from None
                    except OSError as error:
                        if not is_disk_full(error):
                            raise
                        raise DiskFull(f"{title}: {spec.shot_id}: the disk filled up signing it ({error})") from error
                    if spec.shot_id in chained:
                        record.notes.append(f"rendered again because {chained[spec.shot_id]}, which it continues, "
                                            "was rendered again")
                    record_shot(out_folder, record)
                    self.say(f"{title}: {spec.shot_id} done: {record.backend} model={record.model_id or '-'} tier={record.tier} "
                             f"quantization={record.quantization} device={record.device} {record.frames} frames "
                             f"in {record.seconds:.1f}s")
                    done += 1
                    self.progress(job, out_folder, Progress(title, "rendering shots", done, units, spec.shot_id))
        except BaseException:
            worker.stop()  # interrupted (a signal, Prefect's TerminationSignal): never wait on a render
            raise
        finally:
            worker.close()
        return None

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

    def finish_interrupted_delivery(self, job: Job) -> Path | None:
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
        """Assemble, seal, move into output/YYYY-MM-DD/<slug>/ and settle the script as done (under the job lease)."""
        finished = self.finish_interrupted_delivery(job)
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
            lineage = version_lineage(job, self.store, self.output, self.settings) if job.redo else None
            slug = slugify(plan.title) if lineage is None else version_slug(plan.title, lineage.version)
            target = delivery_folder(self.output, night, slug)
            job.log(f"delivering to {target}")
            seal_delivery(work, self.settings, script_name=job.script_name, script_sha256=job.script_sha256,
                          job_id=job.id, renderer=job.renderer or "", night_started=job.night_started,
                          history=job.history, lineage=lineage, report=self.finishing(job, work, plan))
            job.delivering_to = str(target)
            self.store.save(job)
            faults.reached("deliver")
            delivered = move_into_place(work, target)
        except DiskFull as full:  # signing found the disk full
            self._pause(self.store.load(job.id), full.report())
            raise
        except OSError as error:
            if not is_disk_full(error):
                raise
            full = DiskFull(f"{job.script_name}: the disk filled up while delivering ({error})",
                            "free disk space; every shot is kept and the delivery is made again on the next try")
            self._pause(self.store.load(job.id), full.report())
            raise full from error
        job.state, job.delivery, job.work_folder = "delivered", str(delivered), str(delivered)
        job.delivered_by = describe_self()
        job.log(f"delivered to {delivered} by {job.delivered_by}")
        self.settle(job, ok=True)
        total = len(plan.specs) + len(FINISH_STEPS)
        self.progress(job, delivered, Progress(plan.title, "delivered", total, total, str(delivered)))
        return delivered

    def _pause(self, job: Job, detail: str) -> None:
        """Stop work on a job without failing it (a full disk): it stays queued, with the reason logged."""
        job.state = "queued"
        job.log(f"paused: {detail}")
        self.store.save(job)

    def fail(self, job: Job, stage: str, detail: str) -> None:
        job.state, job.error = "failed", detail
        job.log(f"failed at {stage}: {detail}")
        self.settle(job, ok=False, report=failure_report(job.script_name, stage,
                                                            detail + f"\n\nWork folder: {job.work_folder}"))

    def settle(self, job: Job, ok: bool, report: str | None = None) -> None:
        """Save the job's new state, then move its script to inbox/done/ or failed/ (if still claimed)."""
        self.store.save(job)
        claimed = Path(job.claimed_path)
        if job.claimed_path and claimed.exists() and claimed.parent.parent.name == ".claimed":
            job.claimed_path = str(settle(claimed, self.inbox, ok=ok, report=report))
            self.store.save(job)

    # ------------------------------------------------------------------ the loop

    def next_job(self, tried: set[str]) -> Job | None:
        """The next job this process may render now: pending, trusted, not backing off, not leased elsewhere."""
        while (job := self.store.next_pending(tried)) is not None:
            tried.add(job.id)
            if not self.trusted(job) or time.monotonic() < self.retry_at.get(job.id, 0.0):
                continue
            if waiting_for(job, self.store) is not None:
                continue  # the version it builds on is not delivered yet
            if self.leases.busy(lease_key("job", job.id)) is None:
                return job
        return None

    def render_queue(self, limit: int | None = None) -> list[JobOutcome]:
        """Every job this process can render now (at most `limit`), higher priority first, read again before each."""
        outcomes: list[JobOutcome] = []
        if time.monotonic() < self.disk_retry_at:
            return outcomes
        tried: set[str] = set()
        while not self.stop.is_set() and self.window_open() and (job := self.next_job(tried)) is not None:
            try:
                outcome = self.steps.job(self, job)
            except DiskFull as error:
                # Every job needs the same disk: pause the whole queue and look again later.
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
            if render and not self.stop.is_set() and self.window_open():
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
        return outcomes

    def _only_others_work(self, intake: bool) -> bool:
        """With `once`: nothing in the inbox, and every claim and job left is another live owner's (or tampered)."""
        if intake and [p for p in pending_files(self.inbox) if is_candidate(p)[0]]:
            return False
        queued = {Path(j.claimed_path) for j in self.store.pending()}
        if intake and any(self.leases.busy(lease_key("claim", p.parent.name)) is None
                          for p in leftover_claims(self.inbox) if p not in queued):
            return False
        return all(self.leases.busy(lease_key("job", j.id)) is not None or not self.trusted(j)
                   or waiting_for(j, self.store) is not None for j in self.store.pending())

    def run_claim(self, claimed: Path, force: bool = False) -> JobOutcome | IntakeOutcome:
        """`nightshift run`: this one script, now: plan it, render it, deliver it."""
        outcome = self.intake.claim(claimed, force=force)
        if outcome.job is None or outcome.status == "failed":
            return outcome
        return self.work_job(outcome.job.id)


def describe_self() -> str:
    return f"pid {os.getpid()} on {HOST}"


def render_request(plan_folder: Path, out_folder: Path, shot_id: str, choice: RendererChoice,
                   settings: Settings) -> dict[str, object]:
    return {"plan_folder": str(plan_folder), "out_folder": str(out_folder), "shot_id": shot_id,
            "choice": {"kind": choice.kind, "device": choice.device, "reason": choice.reason},
            "settings": settings.render.model_dump(mode="json")}


def remove_leftovers(work: Path) -> None:
    """Half-written files of killed renders never reach output/: all shots are done when this runs."""
    shutil.rmtree(work / ".work", ignore_errors=True)
    for partial in [p for p in work.rglob(".*") if is_partial(p)]:
        partial.unlink(missing_ok=True)
