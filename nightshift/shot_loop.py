"""The one shot loop: each shot through the render child, signed once and recorded as it lands.

For a job, each shot is rendered under its own lease (nightshift/leases.py), so machines sharing the studio
render one job's shots side by side; a shot another machine holds is left to it, with the shots that
continue it (their first frame is its end frame). A shot finished elsewhere meanwhile is skipped, and a
job delivered or failed elsewhere stops the loop. `nightshift render` on a plan folder or a delivery is
the user's own command, in the user's own folder: its shots take no lease.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from nightshift.config import Settings
from nightshift.credentials import ShotSigner
from nightshift.errors import DiskFull, ShotFailed, is_disk_full
from nightshift.jobs import Job
from nightshift.leases import HOST, Owner, lease_key
from nightshift.plan_files import load_plan_folder
from nightshift.provenance import MANIFEST_JSON
from nightshift.records import record_shot, shots_not_done, with_continuations
from nightshift.render_worker import RenderWorker, render_with_retries
from nightshift.renderers.continuity import continues_from
from nightshift.renderers.shots import RendererChoice
from nightshift.schemas import ClipRecord, RenderPlan, RenderSpec
from nightshift.seal import FINISH_STEPS
from nightshift.signing import SigningError
from nightshift.steps import Progress

if TYPE_CHECKING:
    from nightshift.engine import NightEngine


class ShotLoop:
    """The shot loop of one engine (its settings, leases, steps, stop request and progress)."""

    def __init__(self, engine: NightEngine) -> None:
        self.engine = engine

    def render(self, plan_folder: Path, out_folder: Path, plan: RenderPlan, choice: RendererChoice,
               specs: list[RenderSpec] | None = None, job: Job | None = None) -> str | None:
        """The one shot loop: each spec not done (or `specs`) through a render child, recorded as it lands.
        For a job, each shot under its lease: one another machine renders is left to it, with the shots that
        continue it. A renderer with several slots (ComfyUI servers) renders that many shots at once, a
        render child and a thread each. Returns "stopped" or "window" when it stopped early, "elsewhere" when
        the shots left render elsewhere, None when every shot is done."""
        if job is not None and not self._still_rendering(job.id, out_folder):
            return "elsewhere"  # delivered or failed by another machine while this one waited for its GPU
        todo = specs if specs is not None else shots_not_done(out_folder, plan.specs, self.engine.verified)
        todo, chained = with_continuations(plan.specs, todo)  # a shot continuing one that renders renders after it
        script_sha256 = load_plan_folder(plan_folder)[0].source_sha256
        # Progress counts the finishing steps too, so 100% means delivered (a plan folder is cut, not sealed).
        units = len(plan.specs) + (len(FINISH_STEPS) if job is not None or (out_folder / MANIFEST_JSON).is_file() else 2)
        run = _Pass(plan_folder, out_folder, plan, choice, job, iter(todo), chained, script_sha256, units,
                    len(plan.specs) - len(todo))
        self.engine.progress(job, out_folder, Progress(plan.title, "rendering shots", run.done, units))
        slots = slot_settings(choice, self.engine.settings)
        if len(slots) == 1:
            return self._slot(run, slots[0])
        results: list[str | None] = []
        failures: list[BaseException] = []

        def slot(settings: Settings) -> None:
            try:
                results.append(self._slot(run, settings))
            except BaseException as error:  # noqa: BLE001 - raised in the caller's thread below
                failures.append(error)
                run.halt = True

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(slot, settings),
                                    name=f"nightshift-slot-{index}") for index, settings in enumerate(slots)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return next((r for r in results if r in ("stopped", "window")), "elsewhere" if run.elsewhere else None)

    def _slot(self, run: _Pass, settings: Settings) -> str | None:
        """One render child's share of a pass: the next shot nobody has, until none is left."""
        engine, title, total = self.engine, run.plan.title, len(run.plan.specs)
        signer = ShotSigner(engine.settings)
        worker = RenderWorker()
        try:
            with engine.stop.calling(worker.stop):
                while (spec := run.next()) is not None:
                    if engine.stop.is_set() or run.halt:
                        return "stopped"
                    if not engine.window_open():
                        return "window"
                    if continues_from(spec) in run.elsewhere:  # its first frame is the end of a shot rendering elsewhere
                        run.elsewhere.add(spec.shot_id)
                        continue
                    with self._shot_lease(run.job, run.out_folder, spec) as verdict:
                        if verdict == "elsewhere":
                            run.elsewhere.add(spec.shot_id)
                            continue
                        if verdict == "done":
                            run.finished()  # finished elsewhere since the list was made
                            continue
                        engine.say(f"{title}: {spec.shot_id} rendering ({run.done + 1}/{total})")
                        request = render_request(run.plan_folder, run.out_folder, spec.shot_id, run.choice, settings)
                        record = engine.steps.shot(title, spec.shot_id, lambda: render_with_retries(
                            worker, request, engine.settings.night.shot_timeout_s, engine.settings.night.shot_retries,
                            engine.say))
                        record = self._sign(signer, run.out_folder, record, spec, title, run.script_sha256)
                        if spec.shot_id in run.chained:
                            record.notes.append(f"rendered again because {run.chained[spec.shot_id]}, which it "
                                                "continues, was rendered again")
                        with run.lock:
                            if run.job is None:
                                record_shot(run.out_folder, record)
                            else:  # machines finishing shots of one job at once each add their record
                                with engine.leases.hold(lease_key("records", run.job.id),
                                                        what=f"recording {spec.shot_id}"):
                                    record_shot(run.out_folder, record)
                    engine.say(f"{title}: {spec.shot_id} done: {record.backend} model={record.model_id or '-'} "
                               f"tier={record.tier} quantization={record.quantization} device={record.device} "
                               f"{record.frames} frames in {record.seconds:.1f}s")
                    engine.progress(run.job, run.out_folder, Progress(title, "rendering shots", run.finished(),
                                                                      run.units, spec.shot_id))
        except BaseException:
            worker.stop()  # interrupted (a signal, Prefect's TerminationSignal): never wait on a render
            raise
        finally:
            worker.close()
        return None

    @contextmanager
    def _shot_lease(self, job: Job | None, folder: Path, spec: RenderSpec) -> Iterator[str]:
        """A job's shot, under its lease for the block: "render" it, or skip it, "done" (finished meanwhile) or
        "elsewhere" (another process renders it, or the job was delivered or failed meanwhile). Shots of
        `nightshift render` on a folder are the user's own command: rendered, with no lease."""
        if job is None:
            yield "render"
            return
        lease = self.engine.leases.take(shot_key(job.id, spec.shot_id), what=f"rendering {spec.shot_id} of job {job.id}")
        if isinstance(lease, Owner):
            yield "elsewhere"
            return
        with lease:
            if lease.taken_over is not None:
                gone = lease.taken_over
                self.engine.say(f"{spec.shot_id} of job {job.id}: taken over from {gone.describe()}, silent since "
                                f"{datetime.fromtimestamp(gone.expires - self.engine.leases.ttl_s):%H:%M:%S}")
                if gone.host != HOST:
                    self.engine.steps.machine_gone(gone.host)
            if not self._still_rendering(job.id, folder):
                yield "elsewhere"
            else:
                yield "render" if shots_not_done(folder, [spec], self.engine.verified) else "done"

    def _still_rendering(self, job_id: str, folder: Path) -> bool:
        """The job is still to be rendered into `folder` (not delivered, failed or moved by another machine)."""
        job = self.engine.store.load(job_id)
        return job.state in ("queued", "rendering") and Path(job.work_folder) == folder and folder.is_dir()

    @staticmethod
    def _sign(signer: ShotSigner, folder: Path, record: ClipRecord, spec: RenderSpec, title: str,
              script_sha256: str) -> ClipRecord:
        """Signed once, now: a shot's credentials describe only itself (nightshift/credentials.py)."""
        try:
            return signer.sign(folder, record, spec, title, script_sha256)
        except SigningError as error:  # a bad certificate fails the job once, not every poll
            raise ShotFailed(f"{title}: {spec.shot_id} rendered but could not be signed: {error}",
                             error.hint) from None
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise DiskFull(f"{title}: {spec.shot_id}: the disk filled up signing it ({error})") from error


def shot_key(job_id: str, shot_id: str) -> str:
    return lease_key("shot", f"{job_id}-{shot_id}")


@dataclass
class _Pass:
    """One pass of the shot loop over a plan, shared by its slots: the shots still to take, what is done."""

    plan_folder: Path
    out_folder: Path
    plan: RenderPlan
    choice: RendererChoice
    job: Job | None
    todo: Iterator[RenderSpec]
    chained: dict[str, str]
    script_sha256: str
    units: int
    done: int
    elsewhere: set[str] = field(default_factory=set)
    halt: bool = False  # a slot failed: the others stop after their shot
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> RenderSpec | None:
        with self.lock:
            return next(self.todo, None)

    def finished(self) -> int:
        with self.lock:
            self.done += 1
            return self.done


def slot_settings(choice: RendererChoice, settings: Settings) -> list[Settings]:
    """The settings of each render slot: one, or one per ComfyUI server (each slot renders on its own)."""
    urls = settings.render.comfyui.urls()
    if choice.kind != "comfyui" or len(urls) < 2:
        return [settings]
    return [settings.model_copy(update={"render": settings.render.model_copy(update={
        "comfyui": settings.render.comfyui.model_copy(update={"url": [url]})})}) for url in urls]


def render_request(plan_folder: Path, out_folder: Path, shot_id: str, choice: RendererChoice,
                   settings: Settings) -> dict[str, object]:
    return {"plan_folder": str(plan_folder), "out_folder": str(out_folder), "shot_id": shot_id,
            "choice": {"kind": choice.kind, "device": choice.device, "reason": choice.reason},
            "settings": settings.render.model_dump(mode="json")}
