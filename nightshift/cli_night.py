"""`nightshift run` and `nightshift serve`: the commands that run the night engine through Prefect.

Stopping: the first Ctrl-C or SIGTERM asks the engine to stop (the render child is killed at
once; the shot renders again on the next start); whatever is still running after GRACE_S is
interrupted, and the process exits by HARD_STOP_S whatever it was doing. Every claim and job is
consistent at any instant (the engine survives SIGKILL anywhere), so stopping early loses nothing.
A second Ctrl-C exits at once.
"""

from __future__ import annotations

import _thread
import argparse
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from prefect.exceptions import TerminationSignal
from prefect.settings import PREFECT_API_URL

from nightshift.cli_progress import terminal_progress
from nightshift.config import Settings
from nightshift.engine import NightEngine
from nightshift.errors import NightshiftError
from nightshift.flows.night import PrefectSteps, run_script
from nightshift.flows.serve import ServedDeployments, emit_claimed
from nightshift.inbox import CLAIMED, claim
from nightshift.steps import PROCESS_STOP

GRACE_S = 5.0  # after a stop request, a step that has not ended by itself is interrupted
HARD_STOP_S = 9.0  # and the process is gone by then, whatever it was waiting on


def prefect_defaults() -> None:
    """Sensible defaults for the embedded server on a small machine; the user's own settings win."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "nightshift")  # the engine's lines in the UI's run logs


def add_commands(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="the main job, now: plan, render, upscale, assemble, deliver a script")
    run.add_argument("script", help="a .fountain, .md or .txt script (it is copied; your file is not moved)")
    run.add_argument("--renderer", choices=("auto", "diffusers", "animatic", "comfyui"))
    run.add_argument("--force", action="store_true", help="render again even if this content was delivered before")

    serve = commands.add_parser("serve", help="watch inbox/, plan what arrives, render overnight")
    serve.add_argument("--now", action="store_true", help="render as soon as a script is planned (skip the window)")
    serve.add_argument("--once", action="store_true", help="stop when the inbox and the queue are empty")
    serve.add_argument("--renderer", choices=("auto", "diffusers", "animatic", "comfyui"))
    serve.add_argument("--events-only", action="store_true",
                       help="only claim files and emit events for the intake deployment (server + workers setups)")
    serve.add_argument("--no-deployments", action="store_true",
                       help="with a Prefect server, do not serve the overnight/render deployments from this process")


STOPS = (KeyboardInterrupt, TerminationSignal)  # Prefect turns SIGTERM into TerminationSignal inside a flow run


@contextmanager
def stop_on_signals(say: Callable[[str], None]) -> Iterator[Callable[[str], None]]:
    """Ctrl-C and SIGTERM stop the engine, then interrupt, then exit; a second signal exits at once. Yields
    `begin`, for a stop that arrived through Prefect's own SIGTERM handler (TerminationSignal)."""
    state = {"signals": 0, "escalating": False}

    def escalate() -> None:
        if PROCESS_STOP.wait(0) and threading.main_thread().is_alive():
            state["escalating"] = True
            _thread.interrupt_main(signal.SIGINT)

    def hard_stop() -> None:
        say("still busy after a stop request: exiting now (everything done so far is kept)")
        logging.shutdown()
        os._exit(130)

    def begin(name: str) -> None:
        if PROCESS_STOP.is_set():
            return
        say(f"stopping ({name}): queued work stays queued; Ctrl-C again exits at once")
        PROCESS_STOP.request()
        for delay, action in ((GRACE_S, escalate), (HARD_STOP_S, hard_stop)):
            timer = threading.Timer(delay, action)
            timer.daemon = True
            timer.start()

    def handler(signum: int, frame: object) -> None:
        if state["escalating"]:
            state["escalating"] = False
            raise KeyboardInterrupt
        state["signals"] += 1
        if state["signals"] > 1:
            os._exit(130)
        begin(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield begin
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def cmd_run(args: argparse.Namespace, settings: Settings, say: Callable[[str], None]) -> int:
    prefect_defaults()
    source = Path(args.script)
    if not source.is_file():
        raise NightshiftError(f"{source}: no such script file", "give the path of a .fountain, .md or .txt file")
    inbox = settings.resolve(settings.paths.inbox)
    staging = inbox / CLAIMED / f".incoming-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    copy = staging / source.name
    shutil.copyfile(source, copy)  # the user's file stays where it is; the copy goes through the inbox
    claimed = claim(copy, inbox)
    staging.rmdir()
    if claimed is None:
        raise NightshiftError(f"{source}: the copy vanished before it was claimed", "run the command again")
    say(f"{source.name}: planning and rendering now ({datetime.now():%H:%M})")
    with stop_on_signals(say) as begin, terminal_progress():
        try:
            folder = run_script(str(claimed.path), claimed.original_name, str(settings.project_dir), args.config,
                                args.renderer, args.force)
        except STOPS as stopped:
            begin(type(stopped).__name__)
            say("stopped: run the same command again to go on where it stopped")
            return 130
    say(f"delivered: {folder}")
    print(folder)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings, say: Callable[[str], None]) -> int:
    prefect_defaults()
    engine = NightEngine(settings, PrefectSteps(str(settings.project_dir), args.config), args.renderer,
                         respect_window=not args.now, say=say)
    window = "now" if args.now else f"{settings.night.window_start}-{settings.night.window_end}"
    served = None
    with stop_on_signals(say) as begin:
        try:
            if PREFECT_API_URL.value() and not (args.events_only or args.no_deployments or args.once):
                served = ServedDeployments(settings, args.config, args.renderer)
                served.start()
                say(f"serving deployments nightshift-overnight/overnight and nightshift-render/render at "
                    f"{PREFECT_API_URL.value()} (no work pool needed)")
            say(f"serving {engine.inbox} (renders: {window}); Ctrl-C stops")
            engine.serve(once=args.once, render=not args.events_only,
                         events=emit_claimed(settings) if args.events_only else None)
        except STOPS as stopped:
            begin(type(stopped).__name__)
        finally:
            if served is not None:
                served.stop()
    if PROCESS_STOP.is_set():
        say("stopped: queued work stays queued; start `nightshift serve` again to go on")
    return 0

