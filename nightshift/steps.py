"""The night engine's vocabulary: how its steps run (`Steps`), what they return, and a stop request.

`Steps` runs each step directly; flows/night.py subclasses it to run intake and each job as a
Prefect flow run and planning and each shot as a task run. `Stop` is what Ctrl-C and SIGTERM set
(nightshift/cli_night.py); every engine in the process listens to `PROCESS_STOP` by default.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, time as clock
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from nightshift.gpu_lock import gpu_name, machine_lock
from nightshift.jobs import Job
from nightshift.schemas import ClipRecord

if TYPE_CHECKING:
    from nightshift.engine import NightEngine
    from nightshift.forecast import Forecast
    from nightshift.night_book import NightSummary

log = logging.getLogger("nightshift.engine")
T = TypeVar("T")
MAX_BACKOFF_S = 300.0  # a job or claim that keeps failing for a reason not its own is retried at most every 5 min


def backoff_s(attempts: int) -> float:
    """The wait before the next try after `attempts` failures in a row: 2, 4, 8 ... up to MAX_BACKOFF_S."""
    return min(MAX_BACKOFF_S, 2.0 ** attempts)


def parse_clock(text: str) -> clock:
    parts = [int(part) for part in text.split(":")]
    return clock(*parts)


def in_window(now: datetime, start: str, end: str) -> bool:
    """Is `now` inside the nightly window [start, end)? Windows may wrap midnight (22:00-06:00)."""
    s, e, t = parse_clock(start), parse_clock(end), now.time()
    if s == e:
        return True
    return s <= t < e if s < e else (t >= s or t < e)


class Stop:
    """A request to stop, from a signal (nightshift/cli_night.py) or a caller. Callbacks run at once
    (the render child is killed, so a stop never waits for a shot to finish)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._callbacks: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self.event.is_set()

    def request(self) -> None:
        self.event.set()
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:  # noqa: BLE001 - stopping must go on whatever one callback does
                log.exception("a stop callback failed")

    def wait(self, seconds: float) -> bool:
        return self.event.wait(seconds)

    @contextmanager
    def calling(self, callback: Callable[[], None]) -> Iterator[None]:
        self._callbacks.append(callback)
        try:
            yield
        finally:
            self._callbacks.remove(callback)


PROCESS_STOP = Stop()  # what Ctrl-C and SIGTERM set in this process; every engine listens to it by default


@dataclass(frozen=True)
class IntakeOutcome:
    job: Job | None
    status: str  # "queued", "duplicate", "failed", "busy" (another process is planning it), "waiting"
    message: str


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str  # "delivered", "delivered_elsewhere", "busy", "failed", "waiting" (window, disk), "stopped"
    message: str
    delivery: str | None = None


@dataclass
class RenderResult:
    folder: Path
    records: list[ClipRecord]
    cut: Path | None  # None: some shots are still missing, so no cut was made
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Progress:
    """How far one job (or `nightshift render`) has got: one unit per shot, one per finishing step."""

    title: str
    stage: str  # "rendering shots", one of seal.FINISH_STEPS, or "delivered"
    done: float
    total: int
    detail: str = ""

    @property
    def percent(self) -> float:
        return 100.0 * min(self.done, self.total) / max(self.total, 1)


class ProgressBoard:
    """Where progress goes besides the engine's Steps: a terminal's bar (nightshift/cli_progress.py) listens
    while a command runs. One per process, like PROCESS_STOP, because `nightshift run` reaches the engine
    through a Prefect flow call that cannot carry a callback."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[Progress], None]] = []

    def publish(self, event: Progress) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken progress display never stops the night
                log.exception("a progress listener failed")

    @contextmanager
    def listening(self, listener: Callable[[Progress], None]) -> Iterator[None]:
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)


PROCESS_PROGRESS = ProgressBoard()


class Steps:
    """How the engine's steps run: here, directly. flows/night.py runs each as a Prefect flow or task run."""

    def intake(self, engine: NightEngine, claimed: Path, force: bool) -> IntakeOutcome:
        return engine.intake.claim(claimed, force=force)

    def job(self, engine: NightEngine, job: Job) -> JobOutcome:
        return engine.work_job(job.id)

    def plan(self, name: str, body: Callable[[], T]) -> T:
        return body()

    def shot(self, job_title: str, shot_id: str, body: Callable[[], T]) -> T:
        return body()

    def deliver(self, job_title: str, body: Callable[[], T]) -> T:
        return body()

    @contextmanager
    def gpu(self, engine: NightEngine, device: str) -> Iterator[None]:
        with machine_lock(gpu_name(device), engine.stop.event):
            yield

    def progress(self, job: Job | None, folder: Path, event: Progress) -> None:
        """A job (None: `nightshift render`) got further: a shot finished, or a finishing step moved on."""

    def delivered(self, job: Job, folder: Path) -> None:
        """The job's delivery is in place."""

    def machine_gone(self, host: str) -> None:
        """Another machine stopped renewing its leases past their expiry, and its work was taken over."""

    def forecast(self, forecast: Forecast) -> None:
        """What the queue will have at the window's end, made again (the window's start, after every shot)."""

    def night_summary(self, summary: NightSummary) -> None:
        """The night is over: render seconds in a cut and wasted, the forecast against what happened."""
