"""The quality ladder: each shot's rungs, cheapest first (animatic, draft, final), and the order a night
climbs them in.

A progressive night (`night.strategy = progressive`) gives every shot due tonight its first rung before any
shot gets the next: the whole queue's drafts, then finals in priority order (the queue's priority, then shots
a reviewer marked, then script order). A continuity chain (a shot starting on the last frame of the one
before) climbs as a unit, in its order, so its joins match at every rung. `in_order` is one rung, final,
job after job. These are plain functions of specs and levels: the engine (nightshift/engine.py), the
forecast (nightshift/forecast.py) and the night simulation (benchmarks/night.py) all order work with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nightshift.config import RenderDefaults, Settings
from nightshift.families import family_rules
from nightshift.renderers.continuity import continues_from
from nightshift.schemas import RUNGS, RenderSpec, Rung


def ladder_for(renderer_kind: str, settings: Settings) -> list[Rung]:
    """The rungs a job rendered by `renderer_kind` climbs. The animatic renderer (no GPU, no weights) draws
    animatics already: one rung, unless render.draft.animatic asks for smaller drafts first."""
    if settings.night.strategy == "in_order":
        return ["final"]
    rungs = list(settings.night.rungs)
    if renderer_kind == "animatic":
        return ["draft", "final"] if settings.render.draft.animatic and "draft" in rungs else ["final"]
    return rungs


def rung_spec(spec: RenderSpec, rung: Rung, render: RenderDefaults) -> RenderSpec:
    """The spec a rung renders: the final is the plan's; a draft is the same family, prompt, seed, frames and
    rate at fewer steps and a smaller size (render.draft, else the family's defaults); an animatic is drawn."""
    if rung == "final":
        return spec
    if rung == "animatic":
        return spec.model_copy(update={"rung": "animatic"})
    rules = family_rules(spec.family)
    scale = render.draft.scale or rules.draft_scale
    width, height = rules.snap_size(round(spec.width * scale), round(spec.height * scale))
    return spec.model_copy(update={"rung": "draft", "steps": min(spec.steps, render.draft.steps or rules.draft_steps),
                                   "width": min(width, spec.width), "height": min(height, spec.height)})


def rung_render_settings(render: RenderDefaults, rung: Rung) -> RenderDefaults:
    """How a rung's clip is finished: a draft's 4K fit is the cheap scaler with no super-resolution model, at the
    same delivery size and encode, so its clip joins the cut by stream copy like any final."""
    if rung == "final":
        return render
    return render.model_copy(update={"upscale_scaler": render.draft.upscale_scaler, "upscale_model": None,
                                     "upscale_sharpen": 0.0})


def level_of(rung: Rung | None, ladder: Sequence[Rung]) -> int:
    """Where a shot at `rung` stands on `ladder`: -1 with nothing watchable, else the highest rung of the ladder
    at or below it (a draft on a final-only ladder is still below its one rung)."""
    if rung is None:
        return -1
    at = RUNGS.index(rung)
    below = [i for i, r in enumerate(ladder) if RUNGS.index(r) <= at]
    return below[-1] if below else -1


def chains(specs: Sequence[RenderSpec]) -> list[list[str]]:
    """The plan's shots in script order, grouped into continuity chains (a lone shot is a chain of one)."""
    groups: list[list[str]] = []
    for spec in specs:
        if groups and continues_from(spec) in groups[-1]:
            groups[-1].append(spec.shot_id)
        else:
            groups.append([spec.shot_id])
    return groups


def pass_order(specs: Sequence[RenderSpec], levels: dict[str, int], level: int, marked: set[str] = frozenset()
               ) -> list[str]:
    """The shots a pass at `level` renders, in order: those below it. The first pass (what makes the cut
    watchable) goes in script order; a later one puts chains holding a shot a reviewer marked first, then the
    rest in script order. A chain is taken whole from its first shot below the level, so its joins match."""
    groups = chains(specs)
    if level > 0:
        groups = sorted(groups, key=lambda group: not (set(group) & marked))  # stable: script order otherwise
    order: list[str] = []
    for group in groups:
        below = [i for i, shot in enumerate(group) if levels.get(shot, -1) < level]
        if below:
            order += group[below[0]:]
    return order


def needed_level(levels: dict[str, int], ladder: Sequence[Rung]) -> int | None:
    """The lowest pass a job's shots still need (None: every shot is at its last rung)."""
    top = len(ladder) - 1
    wanted = [min(level + 1, top) for level in levels.values() if level < top]
    return min(wanted) if wanted else None


# ---------------------------------------------------------------------------- a night, simulated


@dataclass
class SimShot:
    shot_id: str
    level: int = -1  # on its job's ladder


@dataclass
class SimJob:
    """A job as a night sees it: its shots (with where each stands), its ladder, the shots a reviewer marked."""

    name: str
    specs: list[RenderSpec]
    ladder: list[Rung]
    levels: dict[str, int] = field(default_factory=dict)
    marked: set[str] = field(default_factory=set)
    arrival: int = 0  # jobs are given in queue order (priority first); this is their order of arrival


@dataclass
class SimNight:
    """What a night did: per job, where each shot stands at the end, and where the render seconds went."""

    levels: dict[str, dict[str, int]]
    seconds_rendered: float
    seconds_in_cut: float  # clips in a cut at the end, or shown in one before a better rung replaced them
    seconds_waste: float  # stopped at the window's end, or replaced before any cut showed them
    steps: list[tuple[str, str, Rung, float]]  # (job, shot, rung, seconds), in order

    @property
    def seconds_waiting(self) -> float:
        """In clips no cut shows yet that are still current (a job not yet whole): a later night's cut takes them."""
        return max(0.0, self.seconds_rendered - self.seconds_in_cut - self.seconds_waste)

    def count(self, job: str, ladder: Sequence[Rung], rung: Rung) -> int:
        """Shots of `job` at `rung` or above at the end."""
        return sum(level >= 0 and RUNGS.index(ladder[level]) >= RUNGS.index(rung)
                   for level in self.levels[job].values())

    def in_cut(self, job: str) -> int:
        """Shots of `job` in a cut at the end: all of them when every one is watchable, else none."""
        levels = self.levels[job]
        return len(levels) if _all_watchable(levels) else 0


def simulate(jobs: Sequence[SimJob], seconds: float, cost: Callable[[SimJob, RenderSpec, Rung], float],
             grace_s: float = 0.0) -> SimNight:
    """Climb the ladder as the engine does (one render slot) with `cost` per shot and rung, for `seconds`: the
    lowest pass anywhere in the queue first (the first pass in arrival order, later ones in queue order), shots
    in `pass_order`. A shot that would end past the window (plus `grace_s`) is stopped: its seconds are spent,
    nothing lands. A job's cut is made whenever all its shots are watchable (the engine makes one at each pass's
    end and as better rungs land), so a clip counts as shown once its job is whole after it lands."""
    levels = {job.name: {s.shot_id: job.levels.get(s.shot_id, -1) for s in job.specs} for job in jobs}
    by_id = {job.name: {s.shot_id: s for s in job.specs} for job in jobs}
    clips: dict[tuple[str, str], list[float | bool]] = {}  # (job, shot) -> [seconds, shown] of its current clip
    clock, rendered, shown, waste, steps = 0.0, 0.0, 0.0, 0.0, []
    stopped = False
    while not stopped:
        wanted = [needed for job in jobs if (needed := needed_level(levels[job.name], job.ladder)) is not None]
        if not wanted:
            break
        level = min(wanted)
        # The first pass takes jobs in arrival order, later passes in queue (priority) order, as the engine does.
        for job in (sorted(jobs, key=lambda j: j.arrival) if level == 0 else jobs):
            needed = needed_level(levels[job.name], job.ladder)
            if needed is None or needed > level:
                continue
            for shot_id in pass_order(job.specs, levels[job.name], level, job.marked):
                rung = job.ladder[level]
                spent = cost(job, by_id[job.name][shot_id], rung)
                if clock + spent > seconds + grace_s or clock >= seconds:
                    cut_short = max(0.0, seconds - clock)  # stopped as the window closes: spent, nothing landed
                    rendered, waste, stopped = rendered + cut_short, waste + cut_short, True
                    break
                clock, rendered = clock + spent, rendered + spent
                steps.append((job.name, shot_id, rung, spent))
                old = clips.get((job.name, shot_id))
                if old is not None:
                    shown, waste = (shown + old[0], waste) if old[1] else (shown, waste + old[0])
                levels[job.name][shot_id] = level
                clips[(job.name, shot_id)] = [spent, False]
                if _all_watchable(levels[job.name]):
                    for (name, _), clip in clips.items():
                        if name == job.name:
                            clip[1] = True
            if stopped:
                break
    shown += sum(float(clip[0]) for clip in clips.values() if clip[1])
    return SimNight(levels, rendered, shown, waste, steps)


def _all_watchable(levels: dict[str, int]) -> bool:
    return all(level >= 0 for level in levels.values())
