"""Delivery: assembly, timeline, signing and sealing against the shots' own render time, at 4K.

    .venv/bin/python -m benchmarks.delivery            # the bundled example and a 50-shot script
    .venv/bin/python -m benchmarks.delivery --quick    # the bundled example only

For each script, one delivery through the night engine (animatic, default 4K settings): every
shot step and the delivery step are timed as they run. Then, on the 50-shot delivery:
- one shot re-rendered in place (`render_plan_folder(folder, [shot])`, what `nightshift render
  --shots` does), against that shot's own render time;
- the shots joined cuts-only by `assemble_cut` against `ffmpeg -f concat -c copy` on the same
  files, in the same run (Debian's ffmpeg).
Goals (issue 13): delivery <= 10% of the shots' render time; one re-rendered shot <= 1.5x its
render + 10 s; cuts-only assembly within 1.5x of ffmpeg's stream copy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from nightshift.config import Settings
from nightshift.delivery import read_manifest
from nightshift.engine import NightEngine
from nightshift.inbox import claim
from nightshift.plan_render import render_plan_folder
from nightshift.renderers.assemble import CutEntry, assemble_cut
from nightshift.schemas import Transition
from nightshift.steps import Steps

T = TypeVar("T")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "corpus" / "lighthouse.fountain"
PLACES = ("HARBOUR WALL", "LIGHTHOUSE STAIR", "FISH MARKET", "CLIFF PATH", "KEEPER'S ROOM")


def fifty_shot_script(scenes: int = 8) -> str:
    """A script the rules planner turns into 50 shots (6 a scene, 2 in the coda), with crossfades and fades."""
    parts = ["Title: Fifty Shots\nAuthor: Nightshift benchmarks\n\n"]
    for number in range(scenes):
        parts.append(f"{'EXT' if number % 2 else 'INT'}. {PLACES[number % len(PLACES)]} {number + 1} - "
                     f"{'NIGHT' if number % 3 else 'DAY'}\n\n")
        parts.append("Wind drags at the flags. MARA (40s, oilskin coat) climbs with a lantern held high.\n\n")
        parts.append("She stops at the top and looks out over the black water.\n\n")
        parts.append("MARA\nThere. A light where no light should be.\n\n")
        parts.append("A gull lifts off the rail and is gone into the dark.\n\n")
        parts.append(("DISSOLVE TO:\n\n" if number % 3 == 0 else "FADE OUT.\n\n" if number % 3 == 1 else "CUT TO:\n\n"))
    parts.append("EXT. SHORE - DAWN\n\nThe lantern lies in the sand, still burning.\n\nA boat rounds the point.\n\n")
    return "".join(parts)


class TimedSteps(Steps):
    """The plain steps, timing each shot and the delivery as they run."""

    def __init__(self) -> None:
        self.shots: dict[str, float] = {}
        self.delivery_s = 0.0

    def shot(self, job_title: str, shot_id: str, body: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return body()
        finally:
            self.shots[shot_id] = time.perf_counter() - started

    def deliver(self, job_title: str, body: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return body()
        finally:
            self.delivery_s = time.perf_counter() - started


def deliver(project: Path, script: Path) -> tuple[Path, TimedSteps, Settings]:
    (project / "inbox").mkdir(parents=True)
    shutil.copyfile(script, project / "inbox" / script.name)
    settings = Settings(project_dir=project, planner={"kind": "rules"})
    steps = TimedSteps()
    engine = NightEngine(settings, steps, renderer="animatic", respect_window=False)
    outcome = engine.run_claim(claim(project / "inbox" / script.name, project / "inbox").path)
    assert outcome.status == "delivered", outcome.message
    return Path(outcome.delivery), steps, settings


def measure_delivery(project: Path, script: Path) -> dict[str, object]:
    folder, steps, _ = deliver(project, script)
    manifest = read_manifest(folder)
    shots_s = sum(steps.shots.values())
    return {"script": script.name, "shots": len(manifest.shots), "cut_frames": manifest.cut.frames,
            "encoded_frames": manifest.cut.encoded_frames, "shots_s": round(shots_s, 1),
            "delivery_s": round(steps.delivery_s, 2), "delivery_share": round(steps.delivery_s / shots_s, 3),
            "folder": str(folder)}


def measure_rerender(folder: Path, project: Path) -> dict[str, object]:
    manifest = read_manifest(folder)
    shot = manifest.clips[len(manifest.clips) // 2].shot_id
    before = {c.file: c.sha256 for c in manifest.clips}
    engine = NightEngine(Settings(project_dir=project, planner={"kind": "rules"}), renderer="animatic",
                         respect_window=False)
    started = time.perf_counter()
    render_plan_folder(engine, folder, [shot])
    wall = time.perf_counter() - started
    after = read_manifest(folder)
    own = next(c.seconds for c in after.clips if c.shot_id == shot)
    untouched = sum(1 for c in after.clips if c.shot_id != shot and before[c.file] == c.sha256)
    return {"shot": shot, "rerender_wall_s": round(wall, 2), "shot_render_s": round(own, 2),
            "goal_s": round(1.5 * own + 10, 2), "others_untouched": f"{untouched}/{len(after.clips) - 1}"}


def measure_concat(folder: Path, work: Path) -> dict[str, object]:
    shots = [folder / c.file for c in read_manifest(folder).clips]
    started = time.perf_counter()
    assemble_cut([CutEntry(s, Transition.cut) for s in shots], work / "ours.mp4", runs_dir=work / "runs")
    ours = time.perf_counter() - started
    listing = work / "list.txt"
    listing.write_text("".join(f"file '{s}'\n" for s in shots))
    started = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                    str(work / "ffmpeg.mp4")], check=True)
    reference = time.perf_counter() - started
    return {"shots": len(shots), "bytes": sum(s.stat().st_size for s in shots), "ours_s": round(ours, 2),
            "ffmpeg_concat_copy_s": round(reference, 2), "ratio": round(ours / reference, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the bundled example only")
    args = parser.parse_args()
    results: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results["example"] = measure_delivery(root / "example", EXAMPLE)
        print(json.dumps(results["example"]), flush=True)
        if not args.quick:
            script = root / "fifty.fountain"
            script.write_text(fifty_shot_script())
            fifty = measure_delivery(root / "fifty", script)
            results["fifty"] = fifty
            print(json.dumps(fifty), flush=True)
            results["rerender_one"] = measure_rerender(Path(str(fifty["folder"])), root / "fifty")
            print(json.dumps(results["rerender_one"]), flush=True)
            (root / "concat").mkdir()
            results["cuts_only_vs_ffmpeg"] = measure_concat(Path(str(fifty["folder"])), root / "concat")
            print(json.dumps(results["cuts_only_vs_ffmpeg"]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
