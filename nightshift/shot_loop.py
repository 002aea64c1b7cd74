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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from nightshift.config import Settings
from nightshift.credentials import ShotSigner
from nightshift.errors import DiskFull, ShotFailed, is_disk_full
from nightshift.jobs import Job
from nightshift.ladder import level_of, pass_order, rung_spec
from nightshift.leases import HOST, Owner, lease_key
from nightshift.plan_files import load_plan_folder
from nightshift.provenance import MANIFEST_JSON
from nightshift.records import record_shot, shot_rungs, shots_not_done, with_continuations
from nightshift.render_worker import RenderWorker, render_with_retries
from nightshift.renderers.continuity import continues_from
from nightshift.renderers.shots import RendererChoice
from nightshift.schemas import ClipRecord, RenderPlan, RenderSpec, Rung
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
               specs: list[RenderSpec] | None = None, job: Job | None = None, climb: Climb | None = None) -> str | None:
        """The one shot loop: each spec not done (or `specs`) through a render child, recorded as it lands.
        For a job, each shot under its lease: one another machine renders is left to it, with the shots that
        continue it. A renderer with several slots (ComfyUI servers) renders that many shots at once, a
        render child and a thread each. Returns "stopped" or "window" when it stopped early, "elsewhere" when
        the shots left render elsewhere, None when every shot is done. With `climb` (a progressive night), the
        shots below its rung, in the ladder's order, at that rung; "yield" when a lower pass is due first."""
        if job is not None and not self._still_rendering(job.id, out_folder):
            return "elsewhere"  # delivered or failed by another machine while this one waited for its GPU
        if climb is not None:
            levels = climb.levels(out_folder, plan.specs, self.engine.verified)
            by_id = {spec.shot_id: spec for spec in plan.specs}
            todo, chained = [by_id[s] for s in pass_order(plan.specs, levels, climb.level, climb.marked)], {}
        else:
            todo = specs if specs is not None else shots_not_done(out_folder, plan.specs, self.engine.verified)
            todo, chained = with_continuations(plan.specs, todo)  # a shot continuing one that renders renders after it
        script_sha256 = load_plan_folder(plan_folder)[0].source_sha256
        # Progress counts the finishing steps too, so 100% means delivered (a plan folder is cut, not sealed).
        units = len(plan.specs) + (len(FINISH_STEPS) if job is not None or (out_folder / MANIFEST_JSON).is_file() else 2)
        run = _Pass(plan_folder, out_folder, plan, choice, job, iter(todo), chained, script_sha256, units,
                    len(plan.specs) - len(todo), climb)
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
        return next((r for r in results if r in ("stopped", "window", "yield")), "elsewhere" if run.elsewhere else None)

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
                    if run.climb is not None and not run.climb.alone and engine.passes.lower_pass_due(run.climb.level):
                        return "yield"  # a job planned meanwhile has shots below this pass: they go first
                    if continues_from(spec) in run.elsewhere:  # its first frame is the end of a shot rendering elsewhere
                        run.elsewhere.add(spec.shot_id)
                        continue
                    with self._shot_lease(run.job, run.out_folder, spec, run.climb) as verdict:
                        if verdict == "elsewhere":
                            run.elsewhere.add(spec.shot_id)
                            continue
                        if verdict == "done":
                            run.finished()  # finished elsewhere since the list was made
                            continue
                        rung: Rung = run.climb.rung if run.climb is not None else "final"
                        at = f" {rung}" if run.climb is not None else ""
                        engine.say(f"{title}: {spec.shot_id}{at} rendering ({run.done + 1}/{total})")
                        request = render_request(run.plan_folder, run.out_folder, spec.shot_id, run.choice, settings,
                                                 rung)
                        predicted = engine.night.predict(spec, rung, run.choice)
                        started = time.monotonic()
                        with WindowWatch(engine, worker, predicted) as watch:
                            record = engine.steps.shot(title, spec.shot_id, lambda: watch.render(
                                lambda: render_with_retries(worker, request, engine.settings.night.shot_timeout_s,
                                                            engine.settings.night.shot_retries, engine.say)))
                        if record is None:  # stopped by the window's end: not a failure (its task run ends well)
                            engine.night.stopped(run.job, spec.shot_id, rung, time.monotonic() - started)
                            engine.say(f"{title}: {spec.shot_id}{at} stopped at the window's end ({watch.why}); "
                                       "it renders again next night at the same rung")
                            return "window"
                        record = self._sign(signer, run.out_folder, record,
                                            rung_spec(spec, rung, settings.render), title, run.script_sha256)
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
                    engine.say(f"{title}: {spec.shot_id}{at} done: {record.backend} model={record.model_id or '-'} "
                               f"tier={record.tier} quantization={record.quantization} device={record.device} "
                               f"{record.frames} frames in {record.seconds:.1f}s")
                    engine.night.rendered(run.job, record, predicted)
                    engine.progress(run.job, run.out_folder, Progress(title, "rendering shots", run.finished(),
                                                                      run.units, spec.shot_id))
                    if run.job is not None and run.climb is not None and run.climb.level > 0:
                        engine.cuts.keep_up(run.job.id)  # the cut shows finals as they land (night.cut_every_s)
        except BaseException:
            worker.stop()  # interrupted (a signal, Prefect's TerminationSignal): never wait on a render
            raise
        finally:
            worker.close()
        return None

    @contextmanager
    def _shot_lease(self, job: Job | None, folder: Path, spec: RenderSpec, climb: Climb | None = None
                    ) -> Iterator[str]:
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
            elif climb is not None:
                yield "render" if climb.levels(folder, [spec], self.engine.verified)[spec.shot_id] < climb.level else "done"
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


@dataclass(frozen=True)
class Climb:
    """One pass of a progressive night over a job: render the shots below `level` of its `ladder`, at that rung."""

    ladder: tuple[Rung, ...]
    level: int
    marked: frozenset[str] = frozenset()  # shots a reviewer marked: their finals go first
    alone: bool = False  # `nightshift run`: this job's passes one after another, not yielding to the queue

    @property
    def rung(self) -> Rung:
        return self.ladder[self.level]

    def levels(self, folder: Path, specs: list[RenderSpec], verified: object = None) -> dict[str, int]:
        return {shot: level_of(rung, self.ladder) for shot, rung in shot_rungs(folder, specs, verified).items()}


class WindowWatch:
    """While a shot renders: when the window closes, the shot finishes if it is predicted to within
    night.grace_s (and is stopped once that grace is spent), else its render child is stopped now. A stopped
    shot leaves only its work folder's scratch files, which the next render of it replaces."""

    def __init__(self, engine: NightEngine, worker: RenderWorker, predicted_s: float) -> None:
        self.engine, self.worker, self.predicted_s = engine, worker, predicted_s
        self.fired, self.why = False, ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="nightshift-window-watch", daemon=True)

    def __enter__(self) -> WindowWatch:
        if self.engine.respect_window:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def render(self, body: Callable[[], ClipRecord]) -> ClipRecord | None:
        """The shot's render; None when this watch stopped it."""
        try:
            return body()
        except ShotFailed:
            if self.fired:
                return None
            raise

    def _watch(self) -> None:
        started, deadline = time.monotonic(), None
        grace = self.engine.settings.night.grace_s
        while not self._done.wait(0.25):
            now = time.monotonic()
            if deadline is None and not self.engine.window_open():
                left = self.predicted_s - (now - started)
                deadline = now + (grace if left <= grace else 0.0)
                self.why = (f"predicted {left:.0f} s more, past night.grace_s {grace:g} s" if left > grace else
                            f"predicted {max(left, 0):.0f} s more, given night.grace_s {grace:g} s, which ran out")
            if deadline is not None and now >= deadline:
                self.fired = True
                self.worker.stop()
                return


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
    climb: Climb | None = None
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
                   settings: Settings, rung: Rung = "final") -> dict[str, object]:
    return {"plan_folder": str(plan_folder), "out_folder": str(out_folder), "shot_id": shot_id, "rung": rung,
            "choice": {"kind": choice.kind, "device": choice.device, "reason": choice.reason},
            "settings": settings.render.model_dump(mode="json")}
