"""What will be ready when the window closes: each rung's render seconds predicted from this machine's own
history, and the queue's night simulated with the ladder's order (nightshift/ladder.py).

History is every clip record (renders.json) in the studio's work folders and deliveries that this machine
rendered: backend, family, model, size rendered at, frames, steps, quantization, tier, device, rung and the
seconds it took. A shot's cost is its rate (seconds per unit: frames x pixels x steps for a model, frames for
an animatic) times its units, the rate taken from the closest renders in that history. Without history the
rate comes from a published or measured figure (PUBLISHED), with the uncertainty stated.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from nightshift.config import Settings
from nightshift.ladder import SimJob, level_of, rung_spec, simulate
from nightshift.machine import machine_name
from nightshift.plan_files import load_plan_folder
from nightshift.records import RENDERS_JSON, load_records, shot_rungs
from nightshift.schemas import ClipRecord, RenderSpec, Rung
from nightshift.steps import parse_clock


@dataclass(frozen=True)
class Figure:
    """A published or measured render time for one shot, the rate every other shot is scaled from."""

    seconds: float
    frames: int
    width: int
    height: int
    steps: int
    source: str
    uncertainty: float  # relative: 0.6 is "within 60%"


# Where there is no history on this machine. GPU figures are the model makers' own; they are for their GPU,
# so the uncertainty is wide until this machine has rendered a few shots.
PUBLISHED: dict[str, Figure] = {
    "wan": Figure(540.0, 121, 1280, 704, 50, "Wan 2.2 TI2V-5B, 5 s at 720p in under 9 minutes on one RTX 4090 "
                  "(Wan-AI README)", 0.6),
    "ltx": Figure(2.0, 121, 768, 512, 40, "LTX-Video, 5 s at 768x512 in 2 s on one H100 (LTX-Video paper; the "
                  "steps are taken as the family's 40)", 1.0),
    "animatic": Figure(0.037, 1, 3840, 2160, 1, "the animatic on a 2-core VM: 0.037 s a frame at 4K "
                       "(BENCHMARKS.md, the progressive night)", 0.5),
}
FALLBACK_FAMILY = "wan"  # LTX-2 and HunyuanVideo 1.5 publish no comparable figure: Wan 2.2's rate stands in


def units(backend: str, frames: int, width: int, height: int, steps: int) -> float:
    """What a render's time scales with: frames for an animatic, frames x megapixels x steps for a model."""
    if backend == "animatic":
        return float(frames)
    return frames * width * height * steps / 1e6


@dataclass(frozen=True)
class Sample:
    backend: str
    model_id: str | None
    device: str
    rung: Rung
    rate: float  # seconds per unit


@dataclass(frozen=True)
class Prediction:
    seconds: float
    uncertainty: float
    basis: str


class RenderHistory:
    """This machine's renders, as rates; more are added as shots land."""

    def __init__(self, samples: list[Sample] | None = None) -> None:
        self.samples = samples or []

    @classmethod
    def of_studio(cls, settings: Settings, host: str | None = None) -> RenderHistory:
        host = host or machine_name()
        studio = settings.resolve(Path(".nightshift"))
        folders = [p.parent for p in (studio / "work").glob(f"*/{RENDERS_JSON}")]
        folders += [p.parent for p in settings.resolve(settings.paths.output).glob(f"*/*/{RENDERS_JSON}")]
        history = cls()
        seen: set[tuple[str, str]] = set()
        for folder in folders:
            try:
                records = load_records(folder)
            except (OSError, ValueError):
                continue  # a damaged or foreign folder teaches nothing
            for record in records.values():
                if (record.rendered_on or host) == host and (record.sha256, record.started) not in seen:
                    seen.add((record.sha256, record.started))
                    history.add(record)
        return history

    def add(self, record: ClipRecord) -> None:
        if not record.render_size or record.seconds <= 0:
            return  # recorded before the forecast kept the size rendered at
        size = units(record.backend.split(":")[0], record.frames, record.render_size[0], record.render_size[1], record.steps or 1)
        if size > 0:
            backend = record.backend.split(":")[0]  # "diffusers:ltx": the family is matched through the model
            self.samples.append(Sample(backend, record.model_id, _device_kind(record.device), record.rung,
                                       record.seconds / size))

    def predict(self, backend: str, spec: RenderSpec, rung: Rung, device: str) -> Prediction:
        """Seconds for `spec` (the rung's own spec) on this machine, from the closest history."""
        model_id = None if backend == "animatic" else spec.model_id
        size = units(backend, spec.num_frames, spec.width, spec.height, spec.steps)
        kind = _device_kind(device)
        for label, match in (("this rung", lambda s: (s.backend, s.model_id, s.device, s.rung)
                              == (backend, model_id, kind, rung)),
                             ("any rung", lambda s: (s.backend, s.model_id, s.device) == (backend, model_id, kind)),
                             ("this backend", lambda s: s.backend == backend)):
            rates = [s.rate for s in self.samples if match(s)][-50:]  # the latest: a driver or setting may change
            if rates:
                rate = statistics.median(rates)
                spread = statistics.median(abs(r - rate) for r in rates) / rate if len(rates) >= 3 else 0.5
                uncertainty = max(0.1, min(1.0, 1.5 * spread + (0.0 if label == "this rung" else 0.2)))
                return Prediction(rate * size, uncertainty, f"this machine's renders ({label})")
        figure = PUBLISHED["animatic" if backend == "animatic" else spec.family if spec.family in PUBLISHED
                           else FALLBACK_FAMILY]
        rate = figure.seconds / units(backend, figure.frames, figure.width, figure.height, figure.steps)
        return Prediction(rate * size, figure.uncertainty, f"no history here: {figure.source}")


def _device_kind(device: str) -> str:
    """cpu, cuda, comfyui ...: the device strings in records say more (the CPU's type) than a rate depends on."""
    return device.split(" ")[0].split(":")[0]


# ---------------------------------------------------------------------------- the night ahead


@dataclass
class JobForecast:
    name: str
    shots: int
    ladder: list[Rung]
    now: dict[Rung, int]  # shots at each rung (or above) now
    by_end: dict[Rung, int]  # ... predicted when the window closes


@dataclass
class Forecast:
    made: str
    window_end: str
    seconds_left: float
    uncertainty: float
    jobs: list[JobForecast] = field(default_factory=list)
    predicted: dict[str, float] = field(default_factory=dict)  # "<job> <shot> <rung>" -> seconds, for the error
    basis: str = ""

    def totals(self) -> dict[Rung, tuple[int, int]]:
        """Per rung: (shots predicted at it or above by the window's end, shots on ladders with it)."""
        out: dict[Rung, tuple[int, int]] = {}
        for job in self.jobs:
            for rung in job.ladder:
                done, total = out.get(rung, (0, 0))
                out[rung] = (done + job.by_end[rung], total + job.shots)
        return out

    def headline(self) -> str:
        """"by 07:00: 30/30 drafts, 18/30 finals (estimated, within 25%)"."""
        if not self.jobs:
            return f"by {self.window_end}: nothing queued"
        parts = [f"{done}/{total} {rung}s" for rung, (done, total) in self.totals().items()]
        return f"by {self.window_end}: {', '.join(parts)} (estimated, within {self.uncertainty:.0%})"

    def lines(self) -> list[str]:
        lines = [self.headline(), f"  {_duration(self.seconds_left)} of window left; costs from {self.basis}"]
        for job in self.jobs:
            then = ", ".join(f"{job.by_end[r]}/{job.shots} {r}s" for r in job.ladder)
            now = ", ".join(f"{job.now[r]} {r}s" for r in job.ladder)
            lines.append(f"  {job.name}: {then} (now {now})")
        return lines

    def markdown(self) -> str:
        rows = ["| job | shots | " + " | ".join(f"{r} by {self.window_end}" for r in ("draft", "final")) + " |",
                "|---|---|---|---|"]
        for job in self.jobs:
            cells = [f"{job.by_end[r]}/{job.shots}" if r in job.ladder else "-" for r in ("draft", "final")]
            rows.append(f"| {job.name} | {job.shots} | " + " | ".join(cells) + " |")
        return "\n".join([f"# Tonight: {self.headline()}", "", f"Made {self.made}; "
                          f"{_duration(self.seconds_left)} of window left; costs from {self.basis}.", ""] + rows)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 else \
        f"{seconds:.0f} s"


def window_left(now: datetime, settings: Settings, respect_window: bool) -> tuple[float, str]:
    """Seconds of render window from `now` (inside it: to its end; before it: the whole coming window) and the
    end as a clock. Without the window (serve --now): an open night, counted as the configured window's length."""
    start, end = parse_clock(settings.night.window_start), parse_clock(settings.night.window_end)
    today = now.date()
    opened = datetime.combine(today, start)
    closes = datetime.combine(today, end)
    if closes <= opened:
        closes += timedelta(days=1)
    length = (closes - opened).total_seconds() or 86400.0
    label = settings.night.window_end
    if not respect_window:  # serve --now: no window; the forecast covers a window's length from now
        return length, f"+{length / 3600:g} h"
    for shift in (-1, 0, 1):
        o, c = opened + timedelta(days=shift), closes + timedelta(days=shift)
        if o <= now < c:
            return (c - now).total_seconds(), label
    return length, label


@dataclass(frozen=True)
class QueuedJob:
    """A job as the forecast takes it: its work folder, ladder, marked shots, arrival rank and renderer."""

    name: str
    folder: Path
    ladder: list[Rung]
    marked: set[str]
    arrival: int
    backend: str
    device: str


def forecast_queue(queued: list[QueuedJob], history: RenderHistory, settings: Settings, now: datetime,
                   respect_window: bool = True) -> Forecast:
    """The night ahead for the queue (in queue order), each job as it stands, costs from `history`, climbed in
    the ladder's order until the window's end."""
    seconds, end_label = window_left(now, settings, respect_window)
    sims: list[SimJob] = []
    predictions: dict[str, Prediction] = {}
    renderer = {job.name: job for job in queued}
    for job in queued:
        _, plan = load_plan_folder(job.folder)
        levels = {shot: level_of(rung, job.ladder) for shot, rung in shot_rungs(job.folder, plan.specs).items()}
        sims.append(SimJob(job.name, plan.specs, job.ladder, levels, job.marked, job.arrival))

    def cost(job: SimJob, spec: RenderSpec, rung: Rung) -> float:
        key = f"{job.name} {spec.shot_id} {rung}"
        if key not in predictions:
            backend = "animatic" if rung == "animatic" else renderer[job.name].backend
            predictions[key] = history.predict(backend, rung_spec(spec, rung, settings.render), rung,
                                               renderer[job.name].device)
        return predictions[key].seconds

    night = simulate(sims, seconds, cost, settings.night.grace_s)
    for sim in sims:  # every shot's cost, also of those the night does not reach (for the error afterwards)
        for spec in sim.specs:
            for rung in sim.ladder:
                cost(sim, spec, rung)
    jobs = [JobForecast(sim.name, len(sim.specs), sim.ladder,
                        {r: _at_least(sim.levels, sim.ladder, r) for r in sim.ladder},
                        {r: night.count(sim.name, sim.ladder, r) for r in sim.ladder}) for sim in sims]
    spent = list(predictions.values())
    uncertainty = (sum(p.uncertainty * p.seconds for p in spent) / sum(p.seconds for p in spent)) if spent else 0.0
    bases = sorted({p.basis for p in spent})
    return Forecast(made=now.isoformat(timespec="seconds"), window_end=end_label, seconds_left=seconds,
                    uncertainty=uncertainty, jobs=jobs, predicted={k: p.seconds for k, p in predictions.items()},
                    basis="; ".join(bases[:3]) + (f" (+{len(bases) - 3} more)" if len(bases) > 3 else "") or "-")


def _at_least(levels: dict[str, int], ladder: list[Rung], rung: Rung) -> int:
    return sum(level >= ladder.index(rung) for level in levels.values())

