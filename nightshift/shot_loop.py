"""The one shot loop: each shot through the render child, signed once and recorded as it lands.

For a job, each shot is rendered under its own lease (nightshift/leases.py), so machines sharing the studio
render one job's shots side by side; a shot another machine holds is left to it, with the shots that
continue it (their first frame is its end frame). A shot finished elsewhere meanwhile is skipped, and a
job delivered or failed elsewhere stops the loop. `nightshift render` on a plan folder or a delivery is
the user's own command, in the user's own folder: its shots take no lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from nightshift.config import Settings
from nightshift.credentials import ShotSigner
from nightshift.errors import DiskFull, ShotFailed, is_disk_full
from nightshift.jobs import Job
from nightshift.leases import Owner, lease_key
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
        """The one shot loop: each spec not done (or `specs`) through the render child, recorded as it lands.
        For a job, each shot under its lease: one another machine renders is left to it, with the shots that
        continue it. Returns "stopped" or "window" when it stopped early, "elsewhere" when the shots left
        render elsewhere, None when every shot is done."""
        if job is not None and not self._still_rendering(job.id, out_folder):
            return "elsewhere"  # delivered or failed by another machine while this one waited for its GPU
        todo = specs if specs is not None else shots_not_done(out_folder, plan.specs, self.engine.verified)
        todo, chained = with_continuations(plan.specs, todo)  # a shot continuing one that renders renders after it
        total = len(plan.specs)
        done = total - len(todo)
        title = plan.title
        script_sha256 = load_plan_folder(plan_folder)[0].source_sha256
        # Progress counts the finishing steps too, so 100% means delivered (a plan folder is cut, not sealed).
        units = total + (len(FINISH_STEPS) if job is not None or (out_folder / MANIFEST_JSON).is_file() else 2)
        self.engine.progress(job, out_folder, Progress(title, "rendering shots", done, units))
        signer = ShotSigner(self.engine.settings)
        worker = RenderWorker()
        elsewhere: set[str] = set()
        try:
            with self.engine.stop.calling(worker.stop):
                for spec in todo:
                    if self.engine.stop.is_set():
                        return "stopped"
                    if not self.engine.window_open():
                        return "window"
                    if continues_from(spec) in elsewhere:  # its first frame is the end of a shot rendering elsewhere
                        elsewhere.add(spec.shot_id)
                        continue
                    with self._shot_lease(job, out_folder, spec) as verdict:
                        if verdict == "elsewhere":
                            elsewhere.add(spec.shot_id)
                            continue
                        if verdict == "done":
                            done += 1  # finished elsewhere since the list was made
                            continue
                        self.engine.say(f"{title}: {spec.shot_id} rendering ({done + 1}/{total})")
                        request = render_request(plan_folder, out_folder, spec.shot_id, choice, self.engine.settings)
                        record = self.engine.steps.shot(title, spec.shot_id, lambda: render_with_retries(
                            worker, request, self.engine.settings.night.shot_timeout_s, self.engine.settings.night.shot_retries,
                            self.engine.say))
                        record = self._sign(signer, out_folder, record, spec, title, script_sha256)
                        if spec.shot_id in chained:
                            record.notes.append(f"rendered again because {chained[spec.shot_id]}, which it continues, "
                                                "was rendered again")
                        if job is None:
                            record_shot(out_folder, record)
                        else:  # machines finishing shots of one job at once each add their record
                            with self.engine.leases.hold(lease_key("records", job.id), what=f"recording {spec.shot_id}"):
                                record_shot(out_folder, record)
                    self.engine.say(f"{title}: {spec.shot_id} done: {record.backend} model={record.model_id or '-'} tier={record.tier} "
                             f"quantization={record.quantization} device={record.device} {record.frames} frames "
                             f"in {record.seconds:.1f}s")
                    done += 1
                    self.engine.progress(job, out_folder, Progress(title, "rendering shots", done, units, spec.shot_id))
        except BaseException:
            worker.stop()  # interrupted (a signal, Prefect's TerminationSignal): never wait on a render
            raise
        finally:
            worker.close()
        return "elsewhere" if elsewhere else None

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


def render_request(plan_folder: Path, out_folder: Path, shot_id: str, choice: RendererChoice,
                   settings: Settings) -> dict[str, object]:
    return {"plan_folder": str(plan_folder), "out_folder": str(out_folder), "shot_id": shot_id,
            "choice": {"kind": choice.kind, "device": choice.device, "reason": choice.reason},
            "settings": settings.render.model_dump(mode="json")}
