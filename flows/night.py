"""Prefect flows: thin shells over the night engine (nightshift/engine.py).

Each flow builds an engine whose `Steps` are Prefect runs, and calls one engine method:
`intake` plans a claimed script, `render` renders and delivers one job, `overnight` is one
machine's night (the engine's queue loop, pass after pass), `night` starts an `overnight` run on
every GPU machine of the work pool, `run_script` is `nightshift run`. Runs are named after what they are (the
script, the night's date); tasks after the shot. The engine decides everything; Prefect adds
names, logs, the GPU slot in the UI, and artifacts.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import av
from PIL import Image
from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType, WorkQueueStatus
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Crashed

from nightshift.machine import machine_name
from nightshift.config import Settings, load_settings
from nightshift.engine import NightEngine
from nightshift.forecast import Forecast
from nightshift.errors import NightWaits, NightshiftError
from nightshift.inbox import original_name
from nightshift.gpu_lock import gpu_name, machine_lock
from nightshift.jobs import Job
from nightshift.night_book import NightSummary
from nightshift.plan_files import load_plan_folder
from nightshift.steps import IntakeOutcome, JobOutcome, Progress, Steps

T = TypeVar("T")
# An update costs ~30 ms of server time (measured: BENCHMARKS.md). A GPU shot takes far longer than
# this, so every shot still shows; only sub-second animatic shots are batched.
PROGRESS_EVERY_S = 2.0
MAX_THUMBNAILS = 60  # ~6 KB each, inlined: the UI cannot load file:// images from an http page
MAX_FIRST_FRAMES = 12  # decoding a 4K first frame costs ~70 ms; a contact sheet of the opening shots is enough


def settings_for(project_dir: str, config: str | None) -> Settings:
    """The studio's settings, read once per flow run (never silently defaulted: a bad file is an error)."""
    return load_settings(Path(config) if config else None, project_dir=Path(project_dir))


def ensure_gpu_limit(name: str, repair: bool = False) -> None:
    """Strict limits must exist; create this GPU's (limit 1) once. With `repair` (only while holding the
    GPU's machine lock, which proves no live render here holds it), give back slots a killed render left."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            return
        if repair and limit.active_slots:
            get_run_logger().warning(f"{name}: {limit.active_slots} GPU slot(s) left by a killed render; given back")
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))


@task(name="step", cache_policy=NO_CACHE)
def _step(body: Any) -> Any:  # noqa: ANN401 - whatever the engine's step returns
    return body()


class PrefectSteps(Steps):
    """The engine's steps as Prefect runs: intake and each job a flow run, planning and each shot a task run."""

    def __init__(self, project_dir: str, config: str | None) -> None:
        self.project_dir, self.config = project_dir, config
        self.progress_artifacts: dict[str, tuple[Any, float]] = {}

    def intake(self, engine: NightEngine, claimed: Path, force: bool) -> IntakeOutcome:
        result = intake(str(claimed), original_name(claimed), self.project_dir, self.config, force)
        job = engine.store.load(result["job_id"]) if result["job_id"] else None
        return IntakeOutcome(job, result["status"], result["message"])

    def job(self, engine: NightEngine, job: Job) -> JobOutcome:
        try:
            result = render(job.id, job.label, self.project_dir, self.config, engine.renderer,
                            engine.respect_window)
        except NightWaits:
            raise  # the whole queue waits for space or the render server
        except NightshiftError as error:  # the job failed and was reported; its run is red, the night goes on
            return JobOutcome(job.id, "failed", str(error))
        return JobOutcome(**result)

    def plan(self, name: str, body: Any) -> Any:  # noqa: ANN401
        return _step.with_options(name="plan script", task_run_name=f"plan {name}")(body)

    def shot(self, job_title: str, shot_id: str, body: Any) -> Any:  # noqa: ANN401
        return _step.with_options(name="render shot", task_run_name=f"{shot_id} render")(body)

    def deliver(self, job_title: str, body: Any) -> Any:  # noqa: ANN401
        return _step.with_options(name="deliver", task_run_name=f"deliver {job_title}")(body)

    @contextmanager
    def gpu(self, engine: NightEngine, device: str) -> Iterator[None]:
        """The GPU's machine lock, then its Prefect slot (what the UI shows). One slot per job: taking it per
        shot cost ~85 ms of API round trips, and Prefect answered 423 for ~2 s after each release."""
        name = gpu_name(device)
        with machine_lock(name, engine.stop.event):
            ensure_gpu_limit(name, repair=True)
            with concurrency(name, occupy=1, strict=True):
                yield

    def progress(self, job: Job | None, folder: Path, event: Progress) -> None:
        """One progress artifact per job, through its shots and then assembly, signing and sealing."""
        if job is None:
            return
        artifact, updated = self.progress_artifacts.get(job.id, (None, 0.0))
        if artifact is None:
            create_table_artifact(key=f"shotlist-{_key(job.id)}", table=_shotlist_table(folder),
                                  description=f"Shot list: {job.title}")
            artifact = create_progress_artifact(progress=event.percent, description=f"{job.title}: shots, "
                                                "then assembly, timeline, signing and sealing")
            self.progress_artifacts[job.id] = (artifact, time.monotonic())
        elif time.monotonic() - updated >= PROGRESS_EVERY_S or event.done >= event.total or event.detail == "":
            update_progress_artifact(artifact, progress=event.percent, description=f"{job.title}: {event.stage}")
            self.progress_artifacts[job.id] = (artifact, time.monotonic())

    def machine_gone(self, host: str) -> None:
        """A machine whose leases expired cannot finish its runs: mark its nights and renders still Running as
        Crashed, so the UI does not show work in progress that nobody is doing."""
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING]))), limit=200)
            for run in runs:
                if run.name.endswith(f" on {host}") or (run.tags and f"machine:{host}" in run.tags):
                    client.set_flow_run_state(run.id, Crashed(message=f"{host} stopped renewing its leases; its "
                                                               "work was taken over by another machine"), force=True)
                    get_run_logger().warning(f"{run.name}: marked Crashed ({host} is gone; its shots were taken over)")

    def forecast(self, forecast: Forecast) -> None:
        """The forecast as an artifact ("forecast", a new version each time): the UI's answer to "what will I
        have at 07:00?"."""
        self._artifact("forecast", forecast.markdown(), f"Tonight: {forecast.headline()}")

    def night_summary(self, summary: NightSummary) -> None:
        self._artifact("night-summary", summary.markdown(),
                       f"Night {summary.night}: {summary.waste_fraction:.1%} of render seconds wasted")

    @staticmethod
    def _artifact(key: str, markdown: str, description: str) -> None:
        try:
            create_markdown_artifact(key=key, markdown=markdown, description=description)
        except Exception as error:  # noqa: BLE001 - the UI missing one forecast never stops the night
            logging.getLogger("nightshift.engine").warning(f"the {key} artifact was not written: {error!r}")

    def delivered(self, job: Job, folder: Path) -> None:
        _, plan = load_plan_folder(folder)
        summary = [f"# {job.title}", "", f"Delivered to `{folder}`", "", f"Renderer: {job.renderer}",
                   f"Manifest: `{folder / 'manifest.json'}`", "", "| shot | file |", "|---|---|"]
        summary += [f"| {s.shot_id} | `shots/{s.shot_id}.mp4` |" for s in plan.specs]
        summary += _thumbnails(folder, [s.shot_id for s in plan.specs])
        create_markdown_artifact(key=f"delivery-{_key(job.id)}", markdown="\n".join(summary),
                                 description=f"Delivery: {job.title}")


def engine_for(project_dir: str, config: str | None, renderer: str | None = None,
               respect_window: bool = True) -> NightEngine:
    return NightEngine(settings_for(project_dir, config), PrefectSteps(project_dir, config), renderer, respect_window,
                       say=get_run_logger().info)


def _key(job_id: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", job_id.lower())


def _shotlist_table(job_folder: Path) -> list[dict]:
    shotlist, plan = load_plan_folder(job_folder)
    frames = {s.shot_id: s.num_frames for s in plan.specs}
    return [{"shot": s.id, "scene": s.scene, "framing": s.framing.value, "camera": s.camera_move.value,
             "seconds": s.duration_s, "frames": frames.get(s.id), "action": s.action, "dialogue": s.dialogue}
            for s in shotlist.shots]


def _thumbnail_uri(image: Image.Image) -> str:
    image.thumbnail((240, 240))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnails(delivered: Path, shot_ids: list[str]) -> list[str]:
    """Keyframe thumbnails; for an animatic (no keyframes), each shot's first frame."""
    keyframes = sorted((delivered / "keyframes").glob("*.png"))[:MAX_THUMBNAILS]
    if keyframes:
        lines = ["", "## Keyframes", ""]
        for path in keyframes:
            with Image.open(path) as image:
                lines.append(f"![{path.stem}]({_thumbnail_uri(image)})")
        return lines
    more = f" (the first {MAX_FIRST_FRAMES} shots)" if len(shot_ids) > MAX_FIRST_FRAMES else ""
    lines = ["", f"## First frames{more}", ""]
    for shot_id in shot_ids[:MAX_FIRST_FRAMES]:
        with av.open(str(delivered / "shots" / f"{shot_id}.mp4")) as clip:
            frame = next(clip.decode(video=0), None)
        if frame is not None:
            lines.append(f"![{shot_id}]({_thumbnail_uri(frame.to_image())})")
    return lines


def _outcome(outcome: JobOutcome) -> dict:
    """A run that finds its work done or held by another owner says so and ends Completed; a failed job fails."""
    get_run_logger().info(outcome.message)
    if outcome.status == "failed":
        raise NightshiftError(outcome.message, "the report is in inbox/failed/; `nightshift queue --all` lists the job")
    return outcome.__dict__


@flow(name="nightshift-intake", flow_run_name="{script_name}")
def intake(claimed: str, script_name: str, project_dir: str = ".", config: str | None = None,
           force: bool = False) -> dict:
    """Plan a claimed script and queue its render (the serve loop or the overnight deployment renders it)."""
    outcome = engine_for(project_dir, config).intake.claim(Path(claimed), force=force)
    get_run_logger().info(outcome.message)
    return {"status": outcome.status, "job_id": outcome.job.id if outcome.job else None, "message": outcome.message}


@flow(name="nightshift-render", flow_run_name="{title}")
def render(job_id: str, title: str, project_dir: str = ".", config: str | None = None,
           renderer: str | None = None, respect_window: bool = False) -> dict:
    """Render a queued job's remaining shots and deliver it; a job delivered or held elsewhere is reported."""
    return _outcome(engine_for(project_dir, config, renderer, respect_window).work_job(job_id))


def _night_of() -> str:
    return flow_run.parameters.get("night_of") or datetime.now().strftime("%Y-%m-%d")


def _machine_night_name() -> str:
    """"night of 2026-12-01 on gpu-a": the given night (else today), and the machine it runs on."""
    return f"night of {_night_of()} on {machine_name()}"


def _night_name() -> str:
    return f"night of {_night_of()}"


@flow(name="nightshift-overnight", flow_run_name=_machine_night_name)
def overnight(project_dir: str = ".", config: str | None = None, renderer: str | None = None,
              respect_window: bool = True, night_of: str = "") -> list[dict]:
    """This machine's night: render every queued job it can lease (priority, then arrival order), each shot
    under its own lease, through the engine's loop, until the window closes (without the window: until every
    job is delivered or failed). Work another machine holds is waited for and taken over if that machine dies."""
    engine = engine_for(project_dir, config, renderer, respect_window)
    logger = get_run_logger()
    if not engine.window_open():
        logger.info(f"outside the window {engine.settings.night.window_start}-{engine.settings.night.window_end}: "
                    f"{len(engine.store.pending())} job(s) wait")
        return []
    if not engine.store.pending():
        logger.info("the queue is empty" + ("; jobs planned before the window closes are rendered tonight"
                                            if respect_window else ": nothing to render"))
    with tags(f"machine:{machine_name()}"):  # its job runs carry it, so a machine that dies can be told apart
        outcomes = engine.render_night()
    left = len(engine.store.pending())
    delivered = sum(o.status == "delivered" for o in outcomes)
    logger.info(f"{delivered} delivered from {machine_name()} tonight; {left} job(s) still queued")
    return [o.__dict__ for o in outcomes]


def machine_queues(work_pool: str) -> tuple[list[str], list[str]]:
    """The work pool's machine queues (one per GPU machine, named after its host; every queue but the
    default): those a worker polls now, and those whose worker is gone."""
    with get_client(sync_client=True) as client:
        queues = client.read_work_queues(work_pool_name=work_pool)
    machines = [q for q in queues if q.name != "default"]
    return ([q.name for q in machines if q.status == WorkQueueStatus.READY],
            [q.name for q in machines if q.status != WorkQueueStatus.READY])


@flow(name="nightshift-night", flow_run_name=_night_name)
def night(project_dir: str = ".", config: str | None = None, renderer: str | None = None,
          respect_window: bool = True, night_of: str = "", work_pool: str = "nightshift-gpu",
          deployment: str = "nightshift-overnight/overnight") -> list[str]:
    """Start tonight on every GPU machine: one `overnight` run in each machine's work queue of `work_pool`
    (its worker polls it), or, with no machine queues (one machine), one in the default queue. Returns the
    flow run ids."""
    logger = get_run_logger()
    ready, gone = machine_queues(work_pool)
    for name in gone:
        logger.warning(f"{name}: no worker has polled its queue lately; no night for it (start its worker)")
    started = []
    for queue in ready or ["default"]:
        run = run_deployment(deployment, work_queue_name=queue, timeout=0, parameters={
            "project_dir": project_dir, "config": config, "renderer": renderer,
            "respect_window": respect_window, "night_of": night_of or datetime.now().strftime("%Y-%m-%d")})
        logger.info(f"the night on {queue}: flow run {run.id}")
        started.append(str(run.id))
    return started


@flow(name="nightshift-run", flow_run_name="{script_name}")
def run_script(claimed: str, script_name: str, project_dir: str = ".", config: str | None = None,
               renderer: str | None = None, force: bool = False) -> str:
    """The main job, now: plan, render every shot, upscale, assemble, deliver."""
    engine = engine_for(project_dir, config, renderer, respect_window=False)
    outcome = engine.run_claim(Path(claimed), force=force)
    if isinstance(outcome, IntakeOutcome):
        raise NightshiftError(outcome.message, "the script and a report are in inbox/failed/")
    if outcome.delivery is None:
        raise NightshiftError(outcome.message, "`nightshift queue --all` shows the job; run again to go on")
    get_run_logger().info(outcome.message)
    return outcome.delivery
