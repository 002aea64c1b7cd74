"""Prefect flows: thin wiring over nightshift.night. Runs are named after the script, tasks after the shot."""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from nightshift import night
from nightshift.config import Settings, load_settings
from nightshift.errors import DiskFull, NightshiftError
from nightshift.gpu_lock import machine_lock
from nightshift.render_job import load_plan_folder
from nightshift.render_worker import RenderWorker, ShotFailed, render_with_retries


def settings_for(project_dir: str, config: str | None) -> Settings:
    return load_settings(Path(config) if config else None, project_dir=Path(project_dir))


# An update costs ~30 ms of server time (measured: BENCHMARKS.md). A GPU shot takes far longer than
# this, so every shot still shows; only sub-second animatic shots are batched.
PROGRESS_EVERY_S = 2.0


def gpu_limit_name(device: str) -> str:
    """One global concurrency slot per machine and device: two renders never share a GPU."""
    return re.sub(r"[^a-z0-9-]+", "-", f"nightshift-gpu-{platform.node()}-{device}".lower())


def ensure_gpu_limit(name: str, repair: bool = False) -> None:
    """Strict limits must exist; create this machine's (limit 1) once. With `repair` (only while
    holding the machine lock), give back slots left by a process that was killed holding one."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            return
        if repair and limit.active_slots:
            get_run_logger().warning(f"{name}: {limit.active_slots} GPU slot(s) left by a killed render; given back")
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))


@contextmanager
def gpu_slot(device: str) -> Iterator[None]:
    """This machine's GPU for the block: the kernel-held machine lock, then the Prefect slot (for the UI)."""
    name = gpu_limit_name(device)
    with machine_lock(name):
        ensure_gpu_limit(name, repair=True)
        with concurrency(name, occupy=1, strict=True):
            yield


@task(name="plan script", task_run_name="plan {script_name}", cache_policy=NO_CACHE)
def plan_script(claimed: str, script_name: str, project_dir: str, config: str | None, force: bool = False) -> dict:
    outcome = night.intake_claim(Path(claimed), settings_for(project_dir, config), force=force)
    get_run_logger().info(outcome.message)
    return {"status": outcome.status, "job_id": outcome.job.id if outcome.job else None, "message": outcome.message}


@task(name="render shot", task_run_name="{shot_id} render", cache_policy=NO_CACHE)
def render_shot(job_id: str, shot_id: str, project_dir: str, config: str | None, worker: RenderWorker,
                choice: dict) -> dict:
    settings = settings_for(project_dir, config)
    job = night.job_store(settings).load(job_id)
    from nightshift.shot_render import RendererChoice

    request = night.render_request(job, shot_id, RendererChoice(**choice), settings)
    logger = get_run_logger()
    record = render_with_retries(worker, request, settings.night.shot_timeout_s, settings.night.shot_retries,
                                 logger.warning)
    night.record_shot(job, record)
    logger.info(f"{shot_id}: {record.backend} model={record.model_id or '-'} tier={record.tier} "
                f"quantization={record.quantization} device={record.device} {record.frames} frames in {record.seconds:.1f}s")
    return {"shot_id": shot_id, "file": record.file, "sha256": record.sha256, "tier": record.tier}


@task(name="deliver", task_run_name="deliver {title}", cache_policy=NO_CACHE)
def deliver(job_id: str, title: str, project_dir: str, config: str | None) -> str:
    settings = settings_for(project_dir, config)
    return str(night.deliver(night.job_store(settings).load(job_id), settings))


def _shotlist_table(job_folder: Path) -> list[dict]:
    shotlist, plan = load_plan_folder(job_folder)
    frames = {s.shot_id: s.num_frames for s in plan.specs}
    return [{"shot": s.id, "scene": s.scene, "framing": s.framing.value, "camera": s.camera_move.value,
             "seconds": s.duration_s, "frames": frames.get(s.id), "action": s.action, "dialogue": s.dialogue} for s in shotlist.shots]


@flow(name="nightshift-render", flow_run_name="{title}", log_prints=True)
def render_job(job_id: str, title: str, project_dir: str = ".", config: str | None = None,
               renderer: str | None = None, respect_window: bool = False) -> str | None:
    """Render a queued job's remaining shots, then deliver. Returns the delivery folder, or None if paused."""
    logger = get_run_logger()
    settings = settings_for(project_dir, config)
    store = night.job_store(settings)
    finished = night.finish_interrupted_delivery(store.load(job_id), settings)
    if finished is not None:
        logger.info(f"{title}: its delivery had finished before a restart: {finished}")
        return str(finished)
    device = choose_device(store.load(job_id), settings, renderer)
    # One GPU slot for this job's whole loop: no two renders share the GPU, across flows. Taking it
    # per shot cost ~85 ms of API round trips each, and inside a task run Prefect 3.8 answered the
    # next acquisition 423 for ~2 s after every release (BENCHMARKS.md, orchestration).
    with gpu_slot(device):
        job = store.load(job_id)  # again, under the slot: another run may have finished it meanwhile
        if job.state == "delivered":
            logger.info(f"{job.script_name}: already delivered to {job.delivery}; nothing to render")
            return job.delivery
        if job.state == "failed":
            raise NightshiftError(f"{job.script_name}: this job failed ({job.error})", "fix the script and drop it again")
        paused = _render_shots(job, title, project_dir, config, renderer, respect_window, settings)
    if paused:
        return None
    try:
        return _deliver_with_summary(job_id, title, project_dir, config)
    except DiskFull:
        raise  # night.deliver paused the job: it stays queued until there is space
    except NightshiftError as error:  # e.g. signing: reported, not retried every poll; the shots stay in the work folder
        night.fail(store.load(job_id), settings, "delivery", error.report())
        raise


def choose_device(job, settings: Settings, renderer: str | None) -> str:  # noqa: ANN001 - a Job
    from nightshift.shot_render import choose_renderer

    _, plan = load_plan_folder(Path(job.work_folder))
    return choose_renderer(renderer or settings.render.renderer, plan, settings.render).device


def _render_shots(job, title: str, project_dir: str, config: str | None, renderer: str | None,  # noqa: ANN001
                  respect_window: bool, settings: Settings) -> bool:
    """Render what is not done yet, in order. Returns True when the window closed first."""
    logger = get_run_logger()
    store = night.job_store(settings)
    choice = night.start_rendering(job, settings, renderer)
    logger.info(f"{job.script_name}: renderer {choice.kind} ({choice.reason})")
    folder = Path(job.work_folder)
    key = re.sub(r"[^a-z0-9-]+", "-", job.id.lower())
    create_table_artifact(key=f"shotlist-{key}", table=_shotlist_table(folder), description=f"Shot list: {title}")
    _, plan = load_plan_folder(folder)
    todo = night.shots_to_render(job)
    done = len(plan.specs) - len(todo)
    progress = create_progress_artifact(progress=100.0 * done / len(plan.specs), description=f"{title}: shots rendered")
    worker = RenderWorker()
    updated = time.monotonic()
    try:
        for spec in todo:
            if respect_window and not night.in_window(datetime.now(), settings.night.window_start,
                                                      settings.night.window_end):
                logger.info(f"window closed at {settings.night.window_end}; "
                            f"{len(plan.specs) - done} shots wait for the next night")
                return True
            try:
                render_shot(job.id, spec.shot_id, project_dir, config, worker, choice.__dict__)
            except DiskFull as error:
                night.pause(store.load(job.id), settings, error.report())
                raise
            except (ShotFailed, NightshiftError) as error:
                night.fail(store.load(job.id), settings, f"rendering {spec.shot_id}", error.report())
                raise
            done += 1
            if time.monotonic() - updated >= PROGRESS_EVERY_S or done == len(plan.specs):
                update_progress_artifact(progress, progress=100.0 * done / len(plan.specs))
                updated = time.monotonic()
    finally:
        worker.close()
    return False


MAX_THUMBNAILS = 60  # ~6 KB each, inlined: the UI cannot load file:// images from an http page
MAX_FIRST_FRAMES = 12  # decoding a 4K first frame costs ~70 ms; a contact sheet of the opening shots is enough


def _thumbnail_uri(image) -> str:  # noqa: ANN001 - a PIL image
    import base64
    import io

    image.thumbnail((240, 240))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnails(delivered: Path, shot_ids: list[str]) -> list[str]:
    """Keyframe thumbnails; for an animatic (no keyframes), each shot's first frame."""
    import av
    from PIL import Image

    keyframes = sorted((delivered / "keyframes").glob("*.png"))[:MAX_THUMBNAILS]
    if keyframes:
        lines = ["", "## Keyframes", ""]
        for path in keyframes:
            with Image.open(path) as image:
                lines.append(f"![{path.stem}]({_thumbnail_uri(image)})")
        return lines
    lines = ["", f"## First frames{' (the first ' + str(MAX_FIRST_FRAMES) + ' shots)' if len(shot_ids) > MAX_FIRST_FRAMES else ''}", ""]
    for shot_id in shot_ids[:MAX_FIRST_FRAMES]:
        with av.open(str(delivered / "shots" / f"{shot_id}.mp4")) as clip:
            frame = next(clip.decode(video=0), None)
        if frame is not None:
            lines.append(f"![{shot_id}]({_thumbnail_uri(frame.to_image())})")
    return lines


def _deliver_with_summary(job_id: str, title: str, project_dir: str, config: str | None) -> str:
    delivered = Path(deliver(job_id, title, project_dir, config))
    _, plan = load_plan_folder(delivered)
    job = night.job_store(settings_for(project_dir, config)).load(job_id)
    key = re.sub(r"[^a-z0-9-]+", "-", job_id.lower())
    summary = [f"# {title}", "", f"Delivered to `{delivered}`", "", f"Renderer: {job.renderer}",
               f"Manifest: `{delivered / 'manifest.json'}`", "", "| shot | file |", "|---|---|"]
    summary += [f"| {s.shot_id} | `shots/{s.shot_id}.mp4` |" for s in plan.specs]
    summary += _thumbnails(delivered, [s.shot_id for s in plan.specs])
    create_markdown_artifact(key=f"delivery-{key}", markdown="\n".join(summary), description=f"Delivery: {title}")
    return str(delivered)


@flow(name="nightshift-intake", flow_run_name="{script_name}")
def intake(claimed: str, script_name: str, project_dir: str = ".", config: str | None = None,
           force: bool = False) -> dict:
    """Plan a claimed script and queue its render (the serve loop or the overnight deployment renders it)."""
    return plan_script(claimed, script_name, project_dir, config, force)


@flow(name="nightshift-overnight", flow_run_name="night of {night_of}")
def overnight(project_dir: str = ".", config: str | None = None, renderer: str | None = None,
              respect_window: bool = True, night_of: str = "") -> list[str]:
    """Render every queued job (priority, then arrival order) within the window; what is left waits for the
    next night. The queue is read again before each job, so priorities set mid-night count."""
    settings = settings_for(project_dir, config)
    store = night.job_store(settings)
    delivered: list[str] = []
    tried: set[str] = set()
    while (job := store.next_pending(tried)) is not None:
        tried.add(job.id)
        try:
            folder = render_job(job.id, job.title or job.script_name, project_dir, config, renderer, respect_window)
        except DiskFull:
            break  # everything stays queued; the next night (or a restart) resumes once space is freed
        except (ShotFailed, NightshiftError):
            continue  # reported in the job and in inbox/failed/; the night goes on
        if folder is None:
            break
        delivered.append(folder)
    return delivered


@flow(name="nightshift-run", flow_run_name="{script_name}")
def run_script(claimed: str, script_name: str, project_dir: str = ".", config: str | None = None,
               renderer: str | None = None, force: bool = False) -> str:
    """The main job, now: plan, render every shot, upscale, assemble, deliver."""
    outcome = plan_script(claimed, script_name, project_dir, config, force)
    if outcome["status"] == "failed":
        raise NightshiftError(outcome["message"], "the script and a report are in inbox/failed/")
    settings = settings_for(project_dir, config)
    job = night.job_store(settings).load(outcome["job_id"])
    if outcome["status"] == "duplicate" and job.state == "delivered":
        return str(job.delivery)
    return render_job(job.id, job.title or script_name, project_dir, config, renderer, False)
