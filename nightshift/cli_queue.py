"""`nightshift queue`: see what renders next, and move a job up or down."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from nightshift.config import Settings
from nightshift.engine import NightEngine
from nightshift.errors import NightshiftError
from nightshift.queue import format_queue, queue_entries, set_priority, waiting_scripts


def add_commands(commands: argparse._SubParsersAction) -> None:
    queue = commands.add_parser("queue", help="list the render queue in the order it will render; set priorities")
    queue.add_argument("--all", action="store_true", help="also list delivered and failed jobs")
    queue.add_argument("--json", action="store_true", help="print {jobs: [...], not_planned: [...]} as JSON")
    queue.add_argument("--priority", type=int, metavar="N",
                       help="set the priority of the JOBs named (higher renders sooner; default 0)")
    queue.add_argument("--forecast", action="store_true",
                       help="what will be ready when the window closes (tonight's, or the coming one's), per job "
                            "and rung, from this machine's render history")
    queue.add_argument("jobs", nargs="*", metavar="JOB", help="job id (or a unique start of it), script name or title")


def cmd_queue(args: argparse.Namespace, settings: Settings, say) -> int:  # noqa: ANN001
    if args.jobs and args.priority is None:
        raise NightshiftError("job names were given without --priority", "add --priority N, or list the queue with no names")
    if args.priority is not None and not args.jobs:
        raise NightshiftError("--priority needs at least one JOB", "name jobs by id, script name or title")
    for reference in args.jobs:
        job = set_priority(settings, reference, args.priority)
        say(f"{job.script_name} (job {job.id}): priority {args.priority}")
    engine = NightEngine(settings)
    store = engine.store
    entries = queue_entries(store, include_finished=args.all)
    waiting = waiting_scripts(settings)
    unreadable = [*store.unreadable(), *(f"{store.path(job.id)} ({why})" for job, why in engine.tampered_jobs())]
    forecast = engine.night.forecast() if args.forecast else None
    if args.json:
        print(json.dumps({"jobs": [e.as_dict() for e in entries],
                          **({"forecast": asdict(forecast)} if forecast is not None else {}),
                          "not_planned": [{"script_name": n, "where": w} for n, w in waiting],
                          "unreadable": [str(p) for p in unreadable]}, indent=2, ensure_ascii=False))
    else:
        print(format_queue(entries, waiting, unreadable))
        if forecast is not None:
            print()
            print("\n".join(forecast.lines()))
    return 0
