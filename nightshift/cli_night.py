"""`nightshift run` and `nightshift serve`: the commands that go through Prefect."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
from datetime import datetime
from pathlib import Path

from nightshift.config import Settings
from nightshift.errors import NightshiftError


def prefect_defaults() -> None:
    """Sensible defaults for the embedded server on a small machine; the user's own settings win."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")


def add_commands(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="the main job, now: plan, render, upscale, assemble, deliver a script")
    run.add_argument("script", help="a .fountain, .md or .txt script (it is copied; your file is not moved)")
    run.add_argument("--renderer", choices=("auto", "diffusers", "animatic"))
    run.add_argument("--force", action="store_true", help="render again even if this content was delivered before")

    serve = commands.add_parser("serve", help="watch inbox/, plan what arrives, render overnight")
    serve.add_argument("--now", action="store_true", help="render as soon as a script is planned (skip the window)")
    serve.add_argument("--once", action="store_true", help="stop when the inbox and the queue are empty")
    serve.add_argument("--renderer", choices=("auto", "diffusers", "animatic"))
    serve.add_argument("--events-only", action="store_true",
                       help="only claim files and emit events for the intake deployment (server + workers setups)")
    serve.add_argument("--no-deployments", action="store_true",
                       help="with a Prefect server, do not serve the overnight/render deployments from this process")


def cmd_run(args: argparse.Namespace, settings: Settings, say) -> int:  # noqa: ANN001
    prefect_defaults()
    from nightshift.flows.night import run_script
    from nightshift.inbox import CLAIMED, claim
    from nightshift.night import inbox_dir

    source = Path(args.script)
    if not source.is_file():
        raise NightshiftError(f"{source}: no such script file", "give the path of a .fountain, .md or .txt file")
    inbox = inbox_dir(settings)
    staging = inbox / CLAIMED / f".incoming-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    copy = staging / source.name
    shutil.copyfile(source, copy)  # the user's file stays where it is; the copy goes through the inbox
    claimed = claim(copy, inbox)
    assert claimed is not None
    staging.rmdir()
    say(f"{source.name}: planning and rendering now ({datetime.now():%H:%M})")
    folder = run_script(str(claimed.path), source.name, str(settings.project_dir), args.config, args.renderer, args.force)
    say(f"delivered: {folder}")
    print(folder)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings, say) -> int:  # noqa: ANN001
    prefect_defaults()
    from nightshift.flows.serve import InboxService

    from prefect.settings import PREFECT_API_URL

    from nightshift.flows.serve import ServedDeployments

    service = InboxService(settings, args.config, now=args.now, renderer=args.renderer,
                           events_only=args.events_only, say=say)
    window = "now" if args.now else f"{settings.night.window_start}-{settings.night.window_end}"
    served = None
    if PREFECT_API_URL.value() and not (args.events_only or args.no_deployments or args.once):
        served = ServedDeployments(settings, args.config, args.renderer)
        served.start()
        say(f"serving deployments nightshift-overnight/overnight and nightshift-render/render at {PREFECT_API_URL.value()} "
            "(no work pool needed)")
    say(f"serving {service.inbox} (renders: {window}); Ctrl-C stops")
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill`, systemd and docker stop like Ctrl-C
    try:
        service.run(once=args.once)
    except KeyboardInterrupt:
        say("stopping: queued work stays queued; start `nightshift serve` again to go on")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if served is not None:
            served.stop()
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
