"""`nightshift serve`: watch the inbox, plan what arrives, render the queue in the overnight window.

One process on one machine needs no work pool: the loop calls the flows
directly, and each call is a flow run in Prefect (visible in the UI when
PREFECT_API_URL points at a server). With a server, the same process also
serves deployments (`nightshift-overnight/overnight`, `nightshift-render/render`)
so the UI's run forms can start a night or re-render a job, still with no work
pool. With --events-only the loop only claims files and emits
`nightshift.script.claimed` events for the `intake` deployment's trigger
(prefect.yaml), for setups with a server and workers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import platform
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from nightshift import night
from nightshift.config import Settings
from nightshift.errors import DiskFull, NightshiftError
from nightshift.inbox import StabilityTracker, claim, is_candidate, leftover_claims, pending_files
from nightshift.render_worker import ShotFailed

log = logging.getLogger("nightshift.serve")
MAX_BACKOFF_S = 300.0  # a job whose render keeps crashing is retried at most every 5 minutes, never dropped


def backoff_s(attempts: int) -> float:
    """The wait before the next try after `attempts` failures in a row: 2, 4, 8 ... up to MAX_BACKOFF_S."""
    return min(MAX_BACKOFF_S, 2.0 ** attempts)


class ServedDeployments:
    """The flows served as deployments from this process (Prefect's `serve`, no work pool), in a thread.

    There is no schedule on them: the serve loop already renders inside the window, and a
    second scheduler would only queue the same jobs twice. They are for the UI's run forms.
    """

    def __init__(self, settings: Settings, config: str | None, renderer: str | None) -> None:
        from prefect.runner import Runner

        self.runner = Runner(name=f"nightshift-{platform.node()}", pause_on_shutdown=True)
        self.settings, self.config, self.renderer = settings, config, renderer
        self.thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None

    async def deployments(self) -> list:
        from nightshift.flows.night import overnight, render_job

        common = {"project_dir": str(self.settings.project_dir), "config": self.config}
        return [
            await overnight.ato_deployment(name="overnight", parameters={**common, "renderer": self.renderer,
                                                                  "respect_window": False},
                                    description="Render every queued job now, higher priority first, then in arrival order."),
            await render_job.ato_deployment(name="render", parameters={**common, "renderer": self.renderer},
                                     description="Render a queued job's remaining shots and deliver it (job_id from "
                                                 "`nightshift queue` or the intake run's result)."),
        ]

    async def _serve(self) -> None:
        try:
            for deployment in await self.deployments():
                await self.runner.aadd_deployment(deployment)
        except BaseException as error:  # noqa: BLE001 - reported to the thread that started us
            self.error = error
            self.ready.set()
            return
        self.ready.set()
        await self.runner.start()

    def start(self, timeout: float = 60.0) -> None:
        # The thread runs in a copy of this context, so it sees the same Prefect settings (API URL).
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(asyncio.run, self._serve()), daemon=True,
                                       name="nightshift-deployments")
        self.thread.start()
        if not self.ready.wait(timeout):
            raise NightshiftError("serving the deployments did not start in time", "check that the Prefect server answers")
        if self.error is not None:
            raise NightshiftError(f"serving the deployments failed: {self.error}", "check PREFECT_API_URL")

    def stop(self) -> None:
        if self.thread is not None and self.thread.is_alive() and self.runner.started:
            try:
                self.runner.execute_in_background(self.runner.astop).result(timeout=30)
            except Exception as error:  # noqa: BLE001 - stopping must not hang or fail on an unreachable server
                log.warning(f"the deployment runner did not stop cleanly: {error!r}")
            self.thread.join(timeout=30)


class InboxService:
    def __init__(self, settings: Settings, config: str | None = None, now: bool = False, renderer: str | None = None,
                 events_only: bool = False, say: Callable[[str], None] = log.info) -> None:
        self.settings, self.config, self.now, self.renderer = settings, config, now, renderer
        self.events_only, self.say = events_only, say
        self.inbox = night.inbox_dir(settings)
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.tracker = StabilityTracker(settings.night.stable_s)
        self.ignored: set[str] = set()
        self.crashes: dict[str, int] = {}  # unexpected errors per job (a Prefect server restart, ...)
        self.retry_at: dict[str, float] = {}  # when a job that crashed is tried again: backing off, never dropped
        self.disk_full = 0  # full-disk pauses in a row: the whole queue waits, longer each time, until space is back
        self.disk_retry_at = 0.0
        # Claimed scripts whose intake stopped for a reason not theirs (a full disk, the Prefect server away):
        # they stay in inbox/.claimed/ and are planned again later; claim path -> (name, attempts, when).
        self.intake_retry: dict[Path, tuple[str, int, float]] = {}

    @property
    def project(self) -> str:
        return str(self.settings.project_dir)

    def recover(self) -> None:
        """Claims a crash left behind are planned (or found already queued) before anything new."""
        for path in leftover_claims(self.inbox):
            self._intake(path, path.name)

    def scan(self) -> int:
        """Claim and plan every complete script in the inbox. Returns how many were taken."""
        taken = 0
        for claimed, (name, _, when) in list(self.intake_retry.items()):
            if time.monotonic() >= when:
                self._intake(claimed, name)
        for path in pending_files(self.inbox):
            ok, why = is_candidate(path)
            if not ok:
                if path.name not in self.ignored and path.name not in ("done", "failed", ".claimed"):
                    self.say(f"inbox: leaving {path.name} alone: {why}")
                    self.ignored.add(path.name)
                continue
            if not self.tracker.ready(path):
                continue
            self.tracker.forget(path)
            claimed = claim(path, self.inbox)
            if claimed is None:
                continue  # gone between detection and claim: someone else took it
            taken += 1
            if self.events_only:
                self._emit(claimed.path, claimed.original_name, claimed.sha256)
            else:
                self._intake(claimed.path, claimed.original_name)
        return taken

    def _intake(self, claimed: Path, name: str) -> None:
        from nightshift.flows.night import intake

        attempts = self.intake_retry.pop(claimed, (name, 0, 0.0))[1] + 1
        try:
            outcome = intake(str(claimed), name, self.project, self.config)
            self.say(outcome["message"])
        except Exception as error:  # noqa: BLE001 - one script never stops the service
            # A script's own problems are settled inside intake (inbox/failed/ with a report). What gets here
            # is the machine's (a full disk, the Prefect server away): the script stays claimed, tried again later.
            delay = backoff_s(attempts)
            what = error.report() if isinstance(error, DiskFull) else repr(error)
            if claimed.exists():
                self.intake_retry[claimed] = (name, attempts, time.monotonic() + delay)
                self.say(f"{name}: intake stopped: {what}\nThe script stays in {claimed.parent}; next try in {delay:.0f} s.")
            else:
                self.say(f"{name}: intake stopped ({what}) and the claim is gone; `nightshift queue --all` shows its job")

    def _emit(self, claimed: Path, name: str, sha256: str) -> None:
        from prefect.events import emit_event

        emit_event(event="nightshift.script.claimed", resource={"prefect.resource.id": f"nightshift.script.{sha256}"},
                   payload={"claimed": str(claimed), "script_name": name, "project_dir": self.project})
        self.say(f"{name}: claimed, event emitted for the intake deployment")

    def window_open(self) -> bool:
        return self.now or night.in_window(datetime.now(), self.settings.night.window_start, self.settings.night.window_end)

    def render_queue(self) -> list[str]:
        from nightshift.flows.night import render_job

        delivered: list[str] = []
        if time.monotonic() < self.disk_retry_at:
            return delivered
        store = night.job_store(self.settings)
        tried: set[str] = set()
        while (job := store.next_pending(tried)) is not None:  # read again each time: priorities set mid-night count
            tried.add(job.id)
            if not self.window_open():
                break
            if time.monotonic() < self.retry_at.get(job.id, 0.0):
                continue
            try:
                folder = render_job(job.id, job.title or job.script_name, self.project, self.config, self.renderer,
                                    respect_window=not self.now)
            except DiskFull as error:
                # Every job needs the same disk: pause the whole queue, not just this job, and look again
                # later rather than starting a flow run per poll while the disk stays full.
                self.disk_full += 1
                delay = backoff_s(self.disk_full)
                self.disk_retry_at = time.monotonic() + delay
                self.say(f"{job.script_name}: {error.report()}\nThe queue waits; next try in {delay:.0f} s.")
                break
            except (ShotFailed, NightshiftError) as error:
                self.say(f"{job.script_name}: failed: {error}")
                continue
            except Exception as error:  # noqa: BLE001 - the night goes on; the job stays queued for a retry
                # Not the script's fault as far as we know (the Prefect server restarting, a full disk
                # on the server side ...): keep it queued and try again later, waiting longer each time.
                self.crashes[job.id] = self.crashes.get(job.id, 0) + 1
                delay = backoff_s(self.crashes[job.id])
                self.retry_at[job.id] = time.monotonic() + delay
                self.say(f"{job.script_name}: render stopped unexpectedly ({error!r}); it stays queued, "
                         f"next try in {delay:.0f} s")
                continue
            self.disk_full = 0
            if folder:
                self.say(f"{job.script_name}: delivered to {folder}")
                delivered.append(folder)
        return delivered

    def idle(self) -> bool:
        files = [p for p in pending_files(self.inbox) if is_candidate(p)[0]]
        return not files and not self.intake_retry and not night.job_store(self.settings).pending()

    def run(self, stop: threading.Event | None = None, once: bool = False) -> None:
        """Serve until `stop` is set (or, with `once`, until the inbox and the queue are empty)."""
        import watchfiles

        stop = stop or threading.Event()
        self.recover()
        poll_ms = int(self.settings.night.poll_s * 1000)
        while not stop.is_set():
            self.scan()
            if not self.events_only and self.window_open():
                self.render_queue()
            if once and self.idle():
                return
            # Wake on any inbox change, or after poll_s to re-check sizes and the window. Ctrl-C must reach
            # the caller: watchfiles would otherwise swallow it and this loop would serve on.
            for _ in watchfiles.watch(self.inbox, stop_event=stop, rust_timeout=poll_ms, yield_on_timeout=True,
                                      recursive=False, raise_interrupt=True):
                break
