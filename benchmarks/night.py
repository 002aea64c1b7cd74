"""A night simulated from per-shot costs: progressive (drafts first) against in-order, for the bundled courier
script and a generated 200-scene feature.

    .venv/bin/python -m benchmarks.night            # about a minute on a 2-core VM

The plans are made for real (`nightshift plan`, rules planner). The night is `nightshift.ladder.simulate`,
the same ordering the engine uses, with one render slot. Costs per shot and rung come from:
  - this machine: the animatic renderer (what a machine without a GPU renders), a few shots of the courier
    rendered for real at draft and final through the render child, the rates scaled by frames;
  - published GPU figures (nightshift/forecast.py PUBLISHED): Wan 2.2 TI2V-5B on one RTX 4090, scaled by
    frames x pixels x steps to each shot's final and draft spec (a draft's fixed costs, text encoder and VAE,
    do not shrink with it, so its real cost is somewhat higher than scaled).
Per case: shots in a cut at dawn, finals at dawn, render seconds in a cut, waiting for one (clips of a job
not yet whole) and wasted (stopped at the window's end, or replaced before a cut showed them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nightshift.config import Settings
from nightshift.forecast import PUBLISHED, units
from nightshift.ladder import SimJob, rung_spec, simulate
from nightshift.plan_files import load_plan_folder
from nightshift.render_worker import RenderWorker
from nightshift.renderers.shots import RendererChoice
from nightshift.schemas import RenderSpec, Rung
from nightshift.shot_loop import render_request

REPO = Path(__file__).resolve().parent.parent
WINDOW_S = 6 * 3600.0  # 01:00-07:00

PLACES = ["ROOFTOP", "TRAIN PLATFORM", "HARBOUR", "KITCHEN", "ARCHIVE", "TUNNEL", "GREENHOUSE", "FERRY DECK",
          "SERVER ROOM", "ORCHARD", "STAIRWELL", "RADIO BOOTH"]
NAMES = ["MIRA", "OSKAR", "TEO", "ANJA", "BASIL", "RUTH"]
ACTIONS = ["{a} crosses the room and stops at the window.", "Rain streaks the glass. {a} waits.",
           "{a} opens a drawer, finds nothing, closes it slowly.", "A door bangs somewhere below. {a} turns.",
           "{a} and {b} watch the lights go out one by one.", "{b} slides a folded map across the table to {a}."]
LINES = ["We should not be here.", "Then why did you come?", "Because nobody else would.", "Keep your voice down.",
         "It was never about the money.", "Tell me what you saw."]


def feature_script(scenes: int, seed: int = 7) -> str:
    """An original, generated feature: `scenes` scenes, each two or three beats of action and an exchange."""
    rng = random.Random(seed)
    out = ["Title: The Long Shift", "Author: Nightshift benchmark (generated)", "", "FADE IN:", ""]
    for number in range(1, scenes + 1):
        a, b = rng.sample(NAMES, 2)
        out += [f"{rng.choice(['INT.', 'EXT.'])} {rng.choice(PLACES)} {number} - {rng.choice(['NIGHT', 'DAY'])}", ""]
        for _ in range(rng.randint(2, 3)):
            out += [rng.choice(ACTIONS).format(a=a.title(), b=b.title()), ""]
        for speaker in (a, b):
            out += [speaker, rng.choice(LINES), ""]
    return "\n".join(out + ["FADE OUT."])


def plan(script: Path, out: Path, family: str) -> Path:
    env = {**os.environ, "NIGHTSHIFT_RENDER__FAMILY": family}
    subprocess.run([sys.executable, "-m", "nightshift.cli", "plan", str(script), "--planner", "rules", "--out",
                    str(out)], check=True, env=env, cwd=out.parent, capture_output=True)
    return out


def animatic_rates(plan_folder: Path, settings: Settings, sample: int = 3) -> dict[Rung, float]:
    """Seconds per frame of this machine's animatic at each rung: `sample` shots rendered for real."""
    _, renderplan = load_plan_folder(plan_folder)
    choice = RendererChoice("animatic", "cpu", "benchmark")
    worker = RenderWorker()
    rates: dict[Rung, float] = {}
    try:
        for rung in ("draft", "final"):
            seconds = frames = 0.0
            for spec in renderplan.specs[:sample]:
                record = worker.render(render_request(plan_folder, plan_folder, spec.shot_id, choice, settings, rung),
                                       600)
                seconds, frames = seconds + record.seconds, frames + record.frames
            rates[rung] = seconds / frames
    finally:
        worker.close()
    return rates


def run_case(name: str, specs: list[RenderSpec], cost: Callable[[RenderSpec, Rung], float], window_s: float,
             settings: Settings, nights: int = 40) -> list[dict]:
    """The first night, and nights after it (each climbing from where the last left off) until every shot is
    final: the night a whole cut first exists, the night it is all final, waste over all of them."""
    rows = []
    for strategy, ladder in (("progressive", ["draft", "final"]), ("in_order", ["final"])):
        levels: dict[str, int] = {}
        first_cut = all_final = None
        rendered = waste = 0.0
        dawn: dict = {}
        for night_number in range(1, nights + 1):
            night = simulate([SimJob(name, specs, ladder, dict(levels))], window_s, lambda j, s, r: cost(s, r),
                             settings.night.grace_s)
            levels = night.levels[name]
            rendered, waste = rendered + night.seconds_rendered, waste + night.seconds_waste
            if night_number == 1:
                dawn = {"in_cut_at_dawn": night.in_cut(name), "finals_at_dawn": night.count(name, ladder, "final"),
                        "night1_waste_pct": round(100 * night.seconds_waste / max(night.seconds_rendered, 1e-9), 2)}
            if first_cut is None and night.in_cut(name):
                first_cut = night_number
            if night.count(name, ladder, "final") == len(specs):
                all_final = night_number
                break
        rows.append({"case": name, "strategy": strategy, "shots": len(specs), "window_h": round(window_s / 3600, 2),
                     **dawn, "first_whole_cut_night": first_cut, "all_final_night": all_final,
                     "render_h": round(rendered / 3600, 2), "waste_pct_all_nights": round(100 * waste / rendered, 2),
                     "all_drafts_h": round(sum(cost(s, "draft") for s in specs) / 3600, 2),
                     "all_finals_h": round(sum(cost(s, "final") for s in specs) / 3600, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nightshift-night-"))
    (root / "feature.fountain").write_text(feature_script(args.scenes), encoding="utf-8")
    settings = Settings(project_dir=root, render={"draft": {"animatic": True}})
    plans = {(script, family): plan(path, root / f"{script}-{family}", family)
             for script, path in (("courier", REPO / "examples" / "corpus" / "courier.fountain"),
                                  ("feature", root / "feature.fountain")) for family in ("ltx", "wan")}
    specs = {key: load_plan_folder(folder)[1].specs for key, folder in plans.items()}
    t0 = time.perf_counter()
    rates = animatic_rates(plans[("courier", "ltx")], settings)
    measured_s = time.perf_counter() - t0

    def animatic(spec: RenderSpec, rung: Rung) -> float:
        return rates[rung] * spec.num_frames

    wan = PUBLISHED["wan"]
    wan_rate = wan.seconds / units("diffusers", wan.frames, wan.width, wan.height, wan.steps)

    def wan_4090(spec: RenderSpec, rung: Rung) -> float:
        own = rung_spec(spec, rung, settings.render)
        return wan_rate * units("diffusers", own.num_frames, own.width, own.height, own.steps)

    rows = []
    courier_total = sum(animatic(s, "final") for s in specs[("courier", "ltx")])
    # The animatic is this machine's renderer: its window is 60% of what every final takes, a night too short.
    rows += run_case("courier, this machine (animatic, 4K)", specs[("courier", "ltx")], animatic,
                     0.6 * courier_total, settings)
    for script in ("courier", "feature"):
        rows += run_case(f"{script}, Wan 2.2 5B on RTX 4090 (published)", specs[(script, "wan")], wan_4090,
                         WINDOW_S, settings)
    # A night too short for the courier's finals on that GPU: two hours (a window after an evening's other work).
    rows += run_case("courier, Wan 2.2 5B on RTX 4090, a 2 h window", specs[("courier", "wan")], wan_4090,
                     2 * 3600.0, settings)
    print(json.dumps({"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
                      "animatic_s_per_frame": {k: round(v, 4) for k, v in rates.items()},
                      "measured_in_s": round(measured_s, 1), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
