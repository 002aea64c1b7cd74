"""The night's work as plain functions: claimed script -> queued job -> rendered shots -> dated delivery.

Prefect flows (flows/) call these; so can a test or a Python shell, with no
server. Every step is idempotent: running it again after a crash redoes only
what has no finished, verified output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time as clock
from pathlib import Path

from nightshift import faults
from nightshift.config import Settings
from nightshift.delivery import delivery_folder, move_into_place
from nightshift.seal import seal_delivery
from nightshift.errors import DiskFull, NightshiftError, is_disk_full
from nightshift.inbox import Claim, original_name, settle
from nightshift.jobs import Job, JobStore
from nightshift.render_job import assemble_folder, is_shot_done, load_plan_folder, load_records, save_records
from nightshift.schemas import RenderSpec, slugify
from nightshift.shot_render import ClipRecord, RendererChoice, choose_renderer


def job_store(settings: Settings) -> JobStore:
    return JobStore(settings.resolve(Path(".nightshift")) / "jobs")


def inbox_dir(settings: Settings) -> Path:
    return settings.resolve(settings.paths.inbox)


def _parse_clock(text: str) -> clock:
    hours, minutes = (int(part) for part in text.split(":"))
    return clock(hours, minutes)


def in_window(now: datetime, start: str, end: str) -> bool:
    """Is `now` inside the nightly window [start, end)? Windows may wrap midnight (22:00-06:00)."""
    s, e, t = _parse_clock(start), _parse_clock(end), now.time()
    if s == e:
        return True
    return s <= t < e if s < e else (t >= s or t < e)


# --------------------------------------------------------------------------- intake


@dataclass(frozen=True)
class IntakeOutcome:
    job: Job | None
    status: str  # "queued", "duplicate", "failed"
    message: str


def intake_claim(claim: Claim | Path, settings: Settings, force: bool = False) -> IntakeOutcome:
    """Plan a claimed script into its job folder and queue it; duplicates and bad scripts are settled here."""
    from nightshift.planning_job import plan_script_file

    store = job_store(settings)
    inbox = inbox_dir(settings)
    if isinstance(claim, Path):  # a claim left behind by a crash
        from nightshift.shot_render import sha256_file

        existing = store.find_claim(claim)
        if existing is not None and existing.state in ("delivered", "failed"):
            # Killed after the job ended but before its script was moved: finish that move now.
            ok = existing.state == "delivered"
            _save_and_settle(existing, settings, ok, report=None if ok else _failure_report(
                existing.script_name, "an earlier run", existing.error or "unknown"))
            return IntakeOutcome(existing, "duplicate" if ok else "failed", f"{existing.script_name}: already {existing.state}")
        if existing is not None:
            return IntakeOutcome(existing, "queued", f"{existing.script_name}: already queued as {existing.id}")
        claim = Claim(original_name(claim), claim, sha256_file(claim))
    earlier = None if force else store.find_sha(claim.sha256)
    if earlier is not None:
        where = earlier.delivery or f"job {earlier.id} ({earlier.state})"
        settled = settle(claim.path, inbox, ok=True)
        (settled.parent / f"{settled.name}.duplicate.txt").write_text(
            f"{claim.original_name} has the same content (sha256 {claim.sha256}) as {earlier.script_name}, "
            f"already handled: {where}.\nNothing was planned or rendered again. To render it anyway, run:\n"
            f"  nightshift run --force {settled}\n", encoding="utf-8")
        return IntakeOutcome(earlier, "duplicate", f"{claim.original_name}: same content as {earlier.script_name}; not rendered again")
    job_id = f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{claim.sha256[:10]}-{hashlib.sha256(str(claim.path).encode()).hexdigest()[:6]}"
    work = settings.resolve(Path(".nightshift")) / "work" / job_id
    job = Job(id=job_id, script_name=claim.original_name, script_sha256=claim.sha256, claimed_path=str(claim.path),
              work_folder=str(work), created=datetime.now().isoformat(timespec="microseconds"))
    faults.reached("plan")
    try:
        result = plan_script_file(claim.path, settings, out_dir=work)
    except (NightshiftError, ValueError, OSError) as error:
        if is_disk_full(error):
            raise _planning_disk_full(claim.original_name, work, error) from error
        report = error.report() if isinstance(error, NightshiftError) else str(error)
        settle(claim.path, inbox, ok=False, report=_failure_report(claim.original_name, "planning", report))
        return IntakeOutcome(None, "failed", f"{claim.original_name}: {report}")
    job.title = result.shotlist.title
    job.log(f"planned: {len(result.shotlist.shots)} shots by {result.shotlist.planner.kind}")
    faults.reached("queue")
    try:
        store.save(job)
    except OSError as error:
        if is_disk_full(error):
            raise _planning_disk_full(claim.original_name, work, error) from error
        raise
    return IntakeOutcome(job, "queued", f"{claim.original_name}: {len(result.shotlist.shots)} shots queued as {job.id}")


def _planning_disk_full(name: str, work: Path, error: OSError) -> DiskFull:
    """Not the script's fault: its half plan is removed and the script stays claimed, to be planned again."""
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return DiskFull(f"{name}: the disk is full; planning stopped ({error})",
                    "free disk space; the script stays in inbox/.claimed/ and is planned again on the next try "
                    "or restart of `nightshift serve`")


def _failure_report(name: str, stage: str, detail: str) -> str:
    return (f"Nightshift could not finish {name} ({stage} failed, {datetime.now().isoformat(timespec='seconds')}).\n\n"
            f"{detail}\n\nThe script is kept here unchanged. Fix it and drop it into the inbox again.\n")


# --------------------------------------------------------------------------- rendering


def finish_interrupted_delivery(job: Job, settings: Settings) -> Path | None:
    """A run killed after its work folder was renamed into output/ but before the job said so:
    the delivery is complete (the rename is the last step), so record it and settle the script."""
    if job.state == "delivered" or not job.delivering_to:
        return None
    target = Path(job.delivering_to)
    if Path(job.work_folder).exists() or not (target / "manifest.json").is_file():
        return None
    job.state, job.delivery, job.work_folder = "delivered", str(target), str(target)
    job.log(f"delivered to {target} (recorded after a restart)")
    _save_and_settle(job, settings, ok=True)
    return target


def _remove_leftovers(work: Path) -> None:
    """Half-written files of killed renders never reach output/: all shots are done when this runs."""
    import shutil

    shutil.rmtree(work / ".work", ignore_errors=True)
    for partial in work.rglob(".*.partial*"):
        partial.unlink(missing_ok=True)


def shots_to_render(job: Job) -> list[RenderSpec]:
    folder = Path(job.work_folder)
    _, plan = load_plan_folder(folder)
    records = load_records(folder)
    return [spec for spec in plan.specs if not is_shot_done(folder, spec, records.get(spec.shot_id))]


def start_rendering(job: Job, settings: Settings, requested: str | None = None) -> RendererChoice:
    store = job_store(settings)
    _, plan = load_plan_folder(Path(job.work_folder))
    choice = choose_renderer(requested or settings.render.renderer, plan, settings.render)
    if job.night_started is None:
        job.night_started = datetime.now().isoformat(timespec="seconds")
    job.state, job.renderer = "rendering", f"{choice.kind}: {choice.reason}"
    job.log(f"rendering with {choice.kind} ({choice.reason})")
    store.save(job)
    return choice


def render_request(job: Job, shot_id: str, choice: RendererChoice, settings: Settings) -> dict[str, object]:
    folder = str(Path(job.work_folder))
    return {"plan_folder": folder, "out_folder": folder, "shot_id": shot_id,
            "choice": {"kind": choice.kind, "device": choice.device, "reason": choice.reason},
            "settings": settings.render.model_dump(mode="json")}


def record_shot(job: Job, record: ClipRecord) -> None:
    folder = Path(job.work_folder)
    records = load_records(folder)
    records[record.shot_id] = record
    save_records(folder, records)


def render_remaining(job: Job, settings: Settings, requested: str | None = None,
                     progress: Callable[[str], None] | None = None) -> list[ClipRecord]:
    """Render the job's remaining shots in this process: no Prefect, no child process (scripts, tests)."""
    from nightshift.render_job import shot_job
    from nightshift.shot_render import make_renderer

    if finish_interrupted_delivery(job, settings) is not None:
        return []
    renderer = make_renderer(start_rendering(job, settings, requested), settings.render)
    folder = Path(job.work_folder)
    records = []
    for spec in shots_to_render(job):
        if progress:
            progress(f"start {job.id} {spec.shot_id}")
        records.append(renderer.render(shot_job(folder, folder, spec.shot_id)))
        record_shot(job, records[-1])
        if progress:
            progress(f"done {job.id} {spec.shot_id}")
    return records


def deliver(job: Job, settings: Settings) -> Path:
    """Assemble, write the manifest, move into output/YYYY-MM-DD/<slug>/ and settle the script as done."""
    finished = finish_interrupted_delivery(job, settings)
    if finished is not None:
        return finished
    store = job_store(settings)
    work = Path(job.work_folder)
    _, plan = load_plan_folder(work)
    records = load_records(work)
    missing = [s.shot_id for s in plan.specs if not is_shot_done(work, s, records.get(s.shot_id))]
    if missing:
        raise NightshiftError(f"{job.script_name}: shots {', '.join(missing)} are not rendered; nothing delivered")
    _remove_leftovers(work)
    try:
        assemble_folder(work, plan)
        faults.reached("deliver")
        night = datetime.fromisoformat(job.night_started) if job.night_started else datetime.now()
        target = delivery_folder(settings.resolve(settings.paths.output), night, slugify(plan.title))
        job.log(f"delivering to {target}")
        seal_delivery(work, settings, script_name=job.script_name, script_sha256=job.script_sha256, job_id=job.id,
                      renderer=job.renderer or "", night_started=job.night_started, history=job.history)
        job.delivering_to = str(target)
        store.save(job)
        faults.reached("deliver")
        delivered = move_into_place(work, target)
    except OSError as error:
        if not is_disk_full(error):
            raise
        full = DiskFull(f"{job.script_name}: the disk filled up while delivering ({error})",
                        "free disk space; every shot is kept and the delivery is made again on the next try")
        pause(store.load(job.id), settings, full.report())
        raise full from error
    job.state, job.delivery, job.work_folder = "delivered", str(delivered), str(delivered)
    _save_and_settle(job, settings, ok=True)
    return delivered


def pause(job: Job, settings: Settings, detail: str) -> None:
    """Stop work on a job without failing it (a full disk): it stays queued, with the reason logged."""
    job.state = "queued"
    job.log(f"paused: {detail}")
    job_store(settings).save(job)


def fail(job: Job, settings: Settings, stage: str, detail: str) -> None:
    job.state, job.error = "failed", detail
    job.log(f"failed at {stage}: {detail}")
    _save_and_settle(job, settings, ok=False,
                     report=_failure_report(job.script_name, stage, detail + f"\n\nWork folder: {job.work_folder}"))


def _save_and_settle(job: Job, settings: Settings, ok: bool, report: str | None = None) -> None:
    """Save the job's new state, then move its script to inbox/done/ or failed/ (if still claimed)."""
    store = job_store(settings)
    store.save(job)
    claimed = Path(job.claimed_path)
    if claimed.exists():
        job.claimed_path = str(settle(claimed, inbox_dir(settings), ok=ok, report=report))
        store.save(job)
