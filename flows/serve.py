"""What `nightshift serve` adds around the engine's loop when a Prefect server is configured.

One process on one machine needs no work pool: the engine's loop runs each intake and each job
as a flow run (visible in the UI when PREFECT_API_URL points at a server). With a server, the
same process also serves deployments (`nightshift-overnight/overnight`, `nightshift-render/render`)
so the UI's run forms can start a night or re-render a job, still with no work pool. With
--events-only the loop only claims files and emits `nightshift.script.claimed` events for the
`intake` deployment's trigger (prefect.yaml), for setups with a server and workers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading

from prefect.events import emit_event
from prefect.runner import Runner

from nightshift.machine import machine_name
from nightshift.config import Settings
from nightshift.errors import NightshiftError
from nightshift.flows.night import overnight, render
from nightshift.inbox import Claim

log = logging.getLogger("nightshift.serve")


class ServedDeployments:
    """The flows served as deployments from this process (Prefect's `serve`, no work pool), in a thread.

    There is no schedule on them: the serve loop already renders inside the window, and a
    second scheduler would only queue the same jobs twice. They are for the UI's run forms.
    """

    def __init__(self, settings: Settings, config: str | None, renderer: str | None) -> None:
        self.runner = Runner(name=f"nightshift-{machine_name()}", pause_on_shutdown=True)
        self.settings, self.config, self.renderer = settings, config, renderer
        self.thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None

    async def deployments(self) -> list:
        common = {"project_dir": str(self.settings.project_dir), "config": self.config}
        return [
            await overnight.ato_deployment(name="overnight", parameters={**common, "renderer": self.renderer,
                                                                         "respect_window": False},
                                           description="Render every queued job now, higher priority first, "
                                                       "then in arrival order."),
            await render.ato_deployment(name="render", parameters={**common, "renderer": self.renderer},
                                        description="Render a queued job's remaining shots and deliver it (job_id "
                                                    "from `nightshift queue` or the intake run's result)."),
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

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop within `timeout_s`: the thread is a daemon, so a runner that hangs never holds the process."""
        if self.thread is not None and self.thread.is_alive() and self.runner.started:
            try:
                self.runner.execute_in_background(self.runner.astop).result(timeout=timeout_s)
            except Exception as error:  # noqa: BLE001 - stopping must not hang or fail on an unreachable server
                log.warning(f"the deployment runner did not stop cleanly: {error!r}")
            self.thread.join(timeout=timeout_s)


def emit_claimed(settings: Settings):  # noqa: ANN201 - a Claim callback
    """For --events-only: each claim becomes a `nightshift.script.claimed` event for the intake deployment."""
    def emit(claimed: Claim) -> None:
        emit_event(event="nightshift.script.claimed",
                   resource={"prefect.resource.id": f"nightshift.script.{claimed.sha256}"},
                   payload={"claimed": str(claimed.path), "script_name": claimed.original_name,
                            "project_dir": str(settings.project_dir)})
        log.info(f"{claimed.original_name}: claimed, event emitted for the intake deployment")
    return emit
