"""Orchestration: plan-and-queue time for a big script, and Prefect's overhead per rendered shot.

    .venv/bin/python -m benchmarks.orchestration --scenes 200 --shots 15

Part 1 drops a generated N-scene script into an inbox, claims it and runs `NightEngine.intake.claim`
(decode, plan, render plan, job queued), once with the rules planner and once with the Ollama
planner against the protocol double answering instantly. Each runs in its own child process so
its peak RSS is its own.

Part 2 renders two identical queued jobs (animatic, short shots) in one child process on the
embedded Prefect server: one through the engine with its plain steps, one through the
`nightshift-render` flow (a task run per shot, the GPU concurrency slot, progress artifacts).
Both use the same render worker process; the difference divided by the shot count is Prefect's
overhead per shot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.planning import generate_script

# Short, small shots so the overhead is not lost in encode time (each shot is still upscaled to 4K).
FAST_PROJECT = """
[planner]
kind = "rules"
[pacing]
min_shot_s = 0.4
max_shot_s = 0.4
establishing_s = 0.4
[render]
fps = 12
width = 256
height = 160
"""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _project(folder: Path, planner: str, ollama_host: str | None) -> Path:
    toml = folder / "nightshift.toml"
    text = FAST_PROJECT.replace('kind = "rules"', f'kind = "{planner}"')
    if ollama_host:
        text = text.replace("[planner]\n", f'[planner]\nollama_host = "{ollama_host}"\n')
    toml.write_text(text)
    (folder / "inbox").mkdir()
    return toml


def _queue(toml: Path, name: str, text: str, force: bool = False):  # noqa: ANN202 - returns a Job
    from nightshift.config import load_settings
    from nightshift.engine import NightEngine
    from nightshift.inbox import claim

    settings = load_settings(toml)
    engine = NightEngine(settings)
    dropped = engine.inbox / name
    dropped.write_text(text)
    outcome = engine.intake.claim(claim(dropped, engine.inbox).path, force=force)
    if outcome.job is None:
        raise SystemExit(f"planning failed: {outcome.message}")
    return settings, outcome.job


def child_plan(scenes: int, planner: str, ollama_host: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        toml = _project(Path(tmp), planner, ollama_host)
        started = time.perf_counter()
        _, job = _queue(toml, "big.fountain", generate_script(scenes))
        seconds = time.perf_counter() - started
        from nightshift.plan_files import load_plan_folder

        _, plan = load_plan_folder(Path(job.work_folder))
        return {"planner": planner, "scenes": scenes, "shots": len(plan.specs), "seconds": seconds, "peak_mb": _peak_mb()}


def child_overhead(scenes: int) -> dict:
    """Render a 1-scene and an N-scene job both ways, in the same process and on the same server."""
    from nightshift.cli_night import prefect_defaults

    prefect_defaults()
    from prefect import flow

    from nightshift.engine import NightEngine
    from nightshift.flows.night import render
    from nightshift.plan_files import load_plan_folder
    from nightshift.render_worker import RenderWorker

    @flow(name="warm-up")
    def warm_up() -> int:
        return 1

    # Time spent encoding (shots in the render worker, the cut in NightEngine.deliver) is the same work on
    # both paths but varies by a few percent, more than the overhead sought: it is measured and
    # taken out of both totals.
    in_worker: list[float] = []

    def timed(function):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                in_worker.append(time.perf_counter() - started)
        return wrapper

    RenderWorker.render = timed(RenderWorker.render)  # type: ignore[method-assign]
    NightEngine.deliver = timed(NightEngine.deliver)  # type: ignore[method-assign]

    def outside_worker(since: float, mark: int) -> tuple[float, float]:
        total = time.perf_counter() - since
        return total, total - sum(in_worker[mark:])

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect-home")
        toml = _project(Path(tmp), "rules", None)
        started = time.perf_counter()
        warm_up()  # starts the embedded server; not part of either measurement
        result: dict = {"server_start_s": time.perf_counter() - started, "runs": []}
        for size in (1, scenes):
            text = generate_script(size)
            settings, plain_job = _queue(toml, f"plain-{size}.fountain", text, force=True)
            _, flow_job = _queue(toml, f"flow-{size}.fountain", text, force=True)
            shots = len(load_plan_folder(Path(plain_job.work_folder))[1].specs)

            # The same engine both ways: its plain steps, then its steps as Prefect flow and task runs.
            started, mark = time.perf_counter(), len(in_worker)
            NightEngine(settings, renderer="animatic", respect_window=False).work_job(plain_job.id)
            plain, plain_outside = outside_worker(started, mark)

            started, mark = time.perf_counter(), len(in_worker)
            render(flow_job.id, f"flow-{size}", str(settings.project_dir), str(toml), "animatic", False)
            prefect, prefect_outside = outside_worker(started, mark)
            result["runs"].append({"shots": shots, "plain_s": plain, "prefect_s": prefect,
                                   "plain_outside_s": plain_outside, "prefect_outside_s": prefect_outside})
        return result


def _run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.orchestration", "--child", *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=200, help="scenes in the plan-and-queue script")
    parser.add_argument("--shots", type=int, default=15, help="about how many shots the overhead run renders")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_plan(int(rest[0]), rest[1], rest[2] if len(rest) > 2 else None) if kind == "plan" \
            else child_overhead(int(rest[0]))
        print(json.dumps(result))
        return

    from tests.ollama_double import OllamaDouble

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rules = _run_child("plan", str(args.scenes), "rules")
    double = OllamaDouble().start()
    try:
        ollama = _run_child("plan", str(args.scenes), "ollama", double.url)
    finally:
        double.stop()
    for row in (rules, ollama):
        print(f"plan+queue {row['scenes']} scenes ({row['shots']} shots), {row['planner']:6s}: "
              f"{row['seconds']:6.2f} s, peak RSS {row['peak_mb']:.0f} MB")
    # The rules planner makes about 5 shots a scene.
    over = _run_child("overhead", str(max(2, round(args.shots / 5))))
    for run in over["runs"]:
        print(f"render {run['shots']:3d} shots: plain {run['plain_s']:6.2f} s, through Prefect {run['prefect_s']:6.2f} s, "
              f"ratio {run['prefect_s'] / run['plain_s']:.3f}, "
              f"outside encoding: plain {run['plain_outside_s']:.2f} s, Prefect {run['prefect_outside_s']:.2f} s, "
              f"difference / shots {1000 * (run['prefect_outside_s'] - run['plain_outside_s']) / run['shots']:.0f} ms")
    small, big = over["runs"]
    extra = [run["prefect_outside_s"] - run["plain_outside_s"] for run in (small, big)]
    per_shot = 1000 * (extra[1] - extra[0]) / (big["shots"] - small["shots"])
    per_flow = extra[0] - small["shots"] * per_shot / 1000
    print(f"Prefect overhead per shot (slope between the two runs): {per_shot:.0f} ms (goal < 50 ms); "
          f"per flow run: {per_flow:.2f} s; embedded server start {over['server_start_s']:.1f} s (once per process)")

if __name__ == "__main__":
    main()
