"""`nightshift review` (the dailies in a browser) and `nightshift mark` (the same marks from a shell)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from nightshift.config import Settings
from nightshift.review import ReviewBook, parse_sets
from nightshift.review_app import ReviewServer, serve_review


def add_commands(commands: argparse._SubParsersAction) -> None:
    review = commands.add_parser("review", help="the morning review: watch the dailies, approve, mark redos (a local web page)")
    review.add_argument("--port", type=int, default=8765)
    review.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    review.add_argument("--token", default=os.environ.get("NIGHTSHIFT_REVIEW_TOKEN"),
                        help="required for any host but loopback; reviewers open the printed address once")

    mark = commands.add_parser("mark", help="approve shots of a delivery, or mark them to render again in the next night")
    mark.add_argument("delivery", help="a delivery folder, e.g. output/2026-12-01/the-last-keeper (or 2026-12-01/the-last-keeper)")
    mark.add_argument("shots", nargs="+", metavar="SHOT", help="shot ids, e.g. s01-sh02")
    what = mark.add_mutually_exclusive_group(required=True)
    what.add_argument("--approve", action="store_true", help="approve: never rendered again unless withdrawn")
    what.add_argument("--redo", action="store_true", help="render again in the next window, into a new version")
    what.add_argument("--withdraw", action="store_true", help="take back an approval, or a redo not started yet")
    mark.add_argument("--note", default="", help="what to change, in your words (kept in the record)")
    mark.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="change a field of the shot before it renders again (action, prompt, framing, camera_move, "
                           "duration_s, ...)")
    mark.add_argument("--keyframe", metavar="IMAGE", help="a PNG or JPEG to use as the shot's first frame")


def cmd_review(args: argparse.Namespace, settings: Settings, say: Callable[[str], None]) -> int:
    server = ReviewServer.make(settings, host=args.host, port=args.port, token=args.token)
    say(f"dailies of {settings.project_dir}: {server.url}  (Ctrl-C stops)")
    serve_review(server)
    return 0


def cmd_mark(args: argparse.Namespace, settings: Settings, say: Callable[[str], None]) -> int:
    action = "approve" if args.approve else "redo" if args.redo else "withdraw"
    keyframe = Path(args.keyframe).read_bytes() if args.keyframe else None
    marks, job = ReviewBook(settings).mark(args.delivery, args.shots, action, note=args.note,
                                           changes=parse_sets(args.set), keyframe=keyframe)
    for mark in marks:
        changed = ", ".join(f"{k}: {mark.before.get(k)!r} -> {v!r}" for k, v in mark.changes.items())
        say(f"{mark.delivery} {mark.shot}: {action}{f' ({changed})' if changed else ''}"
            f"{f' - {mark.note}' if mark.note else ''}")
    if job is not None:
        night = settings.night
        say(f"queued as job {job.id}: {', '.join(job.redo.shots)} render again in the next window "
            f"({night.window_start}-{night.window_end}), or now under `nightshift serve --now`; "
            "the result is a new version beside this one")
    return 0
