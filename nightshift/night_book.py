"""One machine's account of a night: which night it is, what it forecasts, and where its render seconds went.

Each machine appends to .nightshift/nights/<night>/<host>.jsonl, a line per event (a shot rendered with its
predicted and actual seconds, a shot stopped at the window's end, a cut made, a forecast), so a process
killed mid-night loses no account and machines sharing the studio never write one file. At the night's end
the summary (nights/<night>/summary-<host>.json, the log, the Prefect UI) says how many render seconds
reached a cut, how many wait for one, and how many were waste (a shot stopped and rendered again, a clip
replaced before any cut showed it), with the forecast made at the window's start set against what happened.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from nightshift.files import write_atomic
from nightshift.forecast import Forecast, QueuedJob, RenderHistory, forecast_queue
from nightshift.jobs import Job
from nightshift.ladder import ladder_for, rung_spec
from nightshift.machine import machine_name
from nightshift.records import load_records
from nightshift.renderers.shots import RendererChoice
from nightshift.review import ReviewBook
from nightshift.schemas import ClipRecord, RenderSpec, Rung
from nightshift.steps import parse_clock

if TYPE_CHECKING:
    from nightshift.engine import NightEngine


def last_opened(now: datetime, start: str) -> datetime:
    """The latest window opening at or before `now`: the night `now` belongs to, inside its window or after it."""
    opened = datetime.combine(now.date(), parse_clock(start))
    return opened if opened <= now else opened - timedelta(days=1)


@dataclass
class NightSummary:
    night: str
    host: str
    render_s: float
    in_cut_s: float
    waiting_s: float  # in clips no cut has shown yet but that are still current (a later delivery takes them)
    waste_s: float
    waste_fraction: float
    shots_rendered: int
    shots_stopped: int
    forecast: str | None
    forecast_error: dict[str, object]

    def lines(self) -> list[str]:
        lines = [f"night {self.night} on {self.host}: {self.shots_rendered} shot renders, {self.render_s:.1f} s; "
                 f"{self.in_cut_s:.1f} s in a cut, {self.waiting_s:.1f} s waiting for one, {self.waste_s:.1f} s "
                 f"waste ({self.waste_fraction:.1%}; {self.shots_stopped} shot(s) stopped as the window closed)"]
        if self.forecast:
            lines.append(f"  forecast at the window's start: {self.forecast}")
            error = self.forecast_error
            lines.append(f"  what happened: {error.get('actual', '-')}; per-shot seconds off by "
                         f"{error.get('shot_seconds_error', 0.0):.0%} (median)")
        return lines

    def markdown(self) -> str:
        return "\n".join([f"# Night {self.night} on {self.host}", ""] + [f"- {line.strip()}" for line in self.lines()])


class NightBook:
    """The engine's night: its id, the ledger, the render history and forecast."""

    def __init__(self, engine: NightEngine) -> None:
        self.engine = engine
        self.root = engine.settings.resolve(Path(".nightshift")) / "nights"
        self.host = machine_name()
        self._history: RenderHistory | None = None
        self.begun: str | None = None

    # ------------------------------------------------------------------ which night

    def night_id(self, now: datetime | None = None) -> str:
        """The night a cut belongs to: when the window it is made in (or the one just closed) opened
        ("2026-12-01T01:00:00"); without the window (serve --now), the day."""
        now = now or datetime.now()
        if not self.engine.respect_window:
            return now.date().isoformat()
        return last_opened(now, self.engine.settings.night.window_start).isoformat(timespec="seconds")

    def night_date(self, night_id: str) -> datetime:
        return datetime.fromisoformat(night_id[:10])

    def _ledger(self, night: str) -> Path:
        return self.root / _safe(night) / f"{_safe(self.host)}.jsonl"

    def _append(self, entry: dict[str, object]) -> None:
        path = self._ledger(self.begun or self.night_id())  # a shot finishing in the grace is the night's
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"at": datetime.now().isoformat(timespec="seconds"), "host": self.host, **entry}) + "\n"
        with open(path, "a", encoding="utf-8") as ledger:  # one short write per line: a kill loses at most it
            ledger.write(line)
            ledger.flush()
            os.fsync(ledger.fileno())

    def entries(self, night: str) -> list[dict[str, object]]:
        """Every machine's lines for `night` (a line a kill cut short is skipped)."""
        found = []
        for path in sorted((self.root / _safe(night)).glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    # ------------------------------------------------------------------ the ledger

    def rendered(self, job: Job | None, record: ClipRecord, predicted: float) -> None:
        self.history.add(record)
        if job is None:
            return  # `nightshift render` on a folder: the user's own command, not the night's
        self._append({"kind": "render", "job": job.id, "shot": record.shot_id, "rung": record.rung,
                      "sha256": record.sha256, "seconds": record.seconds, "predicted": round(predicted, 3)})
        self.publish_forecast()

    def stopped(self, job: Job | None, shot_id: str, rung: Rung, seconds: float) -> None:
        if job is not None:
            self._append({"kind": "stopped", "job": job.id, "shot": shot_id, "rung": rung, "seconds": seconds})

    def cut(self, job: Job, folder: Path, shots: dict[str, str]) -> None:
        self._append({"kind": "cut", "job": job.id, "folder": str(folder), "shots": shots})

    # ------------------------------------------------------------------ forecast

    @property
    def history(self) -> RenderHistory:
        if self._history is None:
            self._history = RenderHistory.of_studio(self.engine.settings, self.host)
        return self._history

    def predict(self, spec: RenderSpec, rung: Rung, choice: RendererChoice) -> float:
        backend = "animatic" if rung == "animatic" else choice.kind
        return self.history.predict(backend, rung_spec(spec, rung, self.engine.settings.render), rung,
                                    choice.device).seconds

    def forecast(self, now: datetime | None = None) -> Forecast:
        """The queue's night ahead, from now to the window's end (before the window: the whole window)."""
        engine = self.engine
        arrival = {job.id: rank for rank, job in enumerate(sorted(engine.store.pending(), key=lambda j: (j.created, j.id)))}
        queued = []
        for job in engine.store.pending():
            folder = Path(job.work_folder)
            if not engine.trusted(job) or not (folder / "renderplan.json").is_file():
                continue  # a redo whose version is not made yet: nothing to forecast from
            backend = (job.renderer or "").split(":")[0] or self._default_backend()
            queued.append(QueuedJob(job.label, folder, job.rungs or ladder_for(backend, engine.settings),
                                    self.marked(job), arrival[job.id], backend, self._device(backend)))
        return forecast_queue(queued, self.history, engine.settings, now or datetime.now(), engine.respect_window)

    def _device(self, backend: str) -> str:
        if backend != "diffusers":
            return "cpu" if backend == "animatic" else backend
        device = self.engine.settings.render.device
        return device if device != "auto" else next((s.device for s in reversed(self.history.samples)
                                                     if s.backend == "diffusers"), "cuda")

    def _default_backend(self) -> str:
        requested = self.engine.renderer or self.engine.settings.render.renderer
        return "animatic" if requested in ("auto", "animatic") else requested

    def marked(self, job: Job) -> set[str]:
        """Shots a reviewer marked to redo on the job's cuts (tonight's, the night before's): finals go first."""
        marked: set[str] = set()
        book = ReviewBook(self.engine.settings)
        for cut in (job.cut, job.cut_parent):
            try:
                key = Path(cut).relative_to(self.engine.output).as_posix() if cut else None
                marked |= {m.shot for m in book.marks(key) if m.action == "redo"} if key else set()
            except (ValueError, OSError):
                continue
        return marked

    def publish_forecast(self, at: str = "shot") -> Forecast | None:
        """Say what will be ready at the window's end: the log, .nightshift/forecast.json, the Prefect UI."""
        try:
            forecast = self.forecast()
        except (OSError, ValueError) as error:  # a folder changing under us: the next shot forecasts again
            self.engine.say(f"forecast skipped: {error}")
            return None
        self.engine.say(f"forecast {forecast.headline()}")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root.parent / "forecast.json", json.dumps(asdict(forecast), indent=2))
        if at == "start":
            self._append({"kind": "forecast", "headline": forecast.headline(), "forecast": asdict(forecast)})
        self.engine.steps.forecast(forecast)
        return forecast

    # ------------------------------------------------------------------ the night's start and end

    def begin(self) -> None:
        """At the window's start (or a restart inside it): the first forecast of the night, recorded."""
        night = self.night_id()
        if self.begun == night or not self.engine.store.pending():
            return  # begun already; or nothing queued yet (the first job planned tonight begins the night)
        self.begun = night
        if not any(e.get("kind") == "forecast" and e.get("host") == self.host for e in self.entries(night)):
            self.publish_forecast(at="start")

    def end(self) -> NightSummary | None:
        """The night's summary: render seconds in a cut, waiting, wasted; the start forecast against what happened."""
        if self.begun is None:
            return None
        night, self.begun = self.begun, None
        summary = self.summary(night)
        path = self.root / _safe(night) / f"summary-{_safe(self.host)}.json"
        write_atomic(path, json.dumps(asdict(summary), indent=2))
        for line in summary.lines():
            self.engine.say(line)
        self.engine.steps.night_summary(summary)
        return summary

    def summary(self, night: str) -> NightSummary:
        entries = self.entries(night)
        mine = [e for e in entries if e.get("host") == self.host]
        shown = {(e["job"], sha) for e in entries if e.get("kind") == "cut" for sha in e["shots"].values()}
        for job in self.engine.store.all():
            shown |= {(job.id, sha) for sha in job.cut_shots.values()}
        current = self._current_clips({str(e["job"]) for e in mine if e.get("kind") == "render"})
        renders = [e for e in mine if e.get("kind") == "render"]
        stopped = [e for e in mine if e.get("kind") == "stopped"]
        in_cut = sum(float(e["seconds"]) for e in renders if (e["job"], e["sha256"]) in shown)
        waiting = sum(float(e["seconds"]) for e in renders if (e["job"], e["sha256"]) not in shown
                      and current.get((e["job"], e["shot"])) == e["sha256"])
        total = sum(float(e["seconds"]) for e in renders + stopped)
        waste = max(0.0, total - in_cut - waiting)
        start = next((e for e in mine if e.get("kind") == "forecast"), None)
        return NightSummary(night=night, host=self.host, render_s=round(total, 3), in_cut_s=round(in_cut, 3),
                            waiting_s=round(waiting, 3), waste_s=round(waste, 3),
                            waste_fraction=round(waste / total, 4) if total else 0.0, shots_rendered=len(renders),
                            shots_stopped=len(stopped), forecast=start["headline"] if start else None,
                            forecast_error=self._forecast_error(start, renders))

    def _current_clips(self, job_ids: set[str]) -> dict[tuple[str, str], str]:
        current = {}
        for job_id in job_ids:
            try:
                job = self.engine.store.load(job_id)
                records = load_records(Path(job.work_folder))
            except (OSError, ValueError):
                continue
            current.update({(job_id, shot): record.sha256 for shot, record in records.items()})
        return current

    def _forecast_error(self, start: dict[str, object] | None, renders: list[dict[str, object]]) -> dict[str, object]:
        """How far the start forecast was off: shots per rung predicted against rendered, and per-shot seconds."""
        errors = sorted(abs(float(e["seconds"]) - float(e["predicted"])) / float(e["seconds"])
                        for e in renders if float(e.get("predicted") or 0) > 0 and float(e["seconds"]) > 0)
        done: dict[str, int] = {}
        for entry in renders:
            done[str(entry["rung"])] = done.get(str(entry["rung"]), 0) + 1
        result: dict[str, object] = {"actual": ", ".join(f"{n} {rung} renders" for rung, n in sorted(done.items())),
                                     "shot_seconds_error": errors[len(errors) // 2] if errors else 0.0,
                                     "shots_compared": len(errors)}
        if start is not None:
            predicted: dict[str, int] = {}
            for job in start["forecast"]["jobs"]:
                for rung, count in job["by_end"].items():
                    predicted[rung] = predicted.get(rung, 0) + count - job["now"].get(rung, 0)
            result["predicted_renders"] = predicted
        return result


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
