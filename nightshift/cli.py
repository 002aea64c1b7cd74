"""The `nightshift` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nightshift import __version__, cli_night, cli_provenance, cli_queue, cli_review
from nightshift.cli_night import stop_on_signals
from nightshift.config import CONFIG_FILE_NAME, Settings, load_settings
from nightshift.doctor import run_doctor
from nightshift.engine import NightEngine
from nightshift.errors import NightshiftError
from nightshift.cli_progress import terminal_progress
from nightshift.files import write_atomic
from nightshift.plan_render import render_plan_folder
from nightshift.planning_job import plan_from_shotlist, plan_script_file
from nightshift.plan_files import write_schemas
from nightshift.project import init_project
from nightshift.provenance import MANIFEST_SCHEMA, manifest_schema
from nightshift.schemas import FAMILY_NAMES, QUANTIZATION_MODES


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress_printer(label: str) -> Callable[[int, int, str], None]:
    """Progress on stderr: a live bar on a terminal, a line every tenth otherwise."""
    if sys.stderr.isatty():
        from rich.progress import Progress

        progress = Progress(transient=True)
        task = progress.add_task(label, total=None)
        progress.start()

        def update(done: int, total: int, what: str) -> None:
            progress.update(task, total=total, completed=done, description=f"{label}: {what[:40]}")
            if done >= total:
                progress.stop()

        return update

    step = [0]

    def report(done: int, total: int, what: str) -> None:
        if total >= 20 and (done * 10 // total > step[0] or done == total):
            step[0] = done * 10 // total
            _say(f"{label}: {done}/{total} scenes")

    return report


# ---------------------------------------------------------------------- init


def cmd_init(args: argparse.Namespace) -> int:
    created = init_project(Path(args.dir))
    for path in created:
        _say(f"created {path}")
    if not created:
        _say(f"{Path(args.dir).resolve()} is already a Nightshift project; nothing changed")
    return 0


# ---------------------------------------------------------------------- plan


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    if args.from_shotlist:
        result = plan_from_shotlist(Path(args.from_shotlist), settings, out_dir=Path(args.out) if args.out else None)
    else:
        if not args.script:
            raise NightshiftError("plan needs a SCRIPT, or --from-shotlist shotlist.json")
        result = plan_script_file(
            Path(args.script),
            settings,
            planner=args.planner,
            out_dir=Path(args.out) if args.out else None,
            progress=_progress_printer("planning"),
        )
    for note in result.shotlist.planner.notes:
        _say(f"planner: {note}")
    for warning in result.shotlist.warnings:
        _say(f"warning: {warning}")
    _say(
        f"{len(result.shotlist.shots)} shots, {result.shotlist.total_seconds:.1f} s, "
        f"{result.plan.family} specs -> {result.folder}"
    )
    print(result.folder)
    return 0


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    render = settings.render
    if args.fit:
        render.upscale_fit = args.fit
    if args.sharpen is not None:
        render.upscale_sharpen = args.sharpen
    if args.quantization:
        render.quantization = args.quantization
    if args.device:
        render.device = args.device
    plan = Path(args.plan)
    folder = plan.parent if plan.is_file() else plan
    shot_ids = [s.strip() for s in args.shots.split(",") if s.strip()] if args.shots else None
    engine = NightEngine(settings, renderer=args.renderer, respect_window=False, say=_say)
    with stop_on_signals(_say), terminal_progress():
        result = render_plan_folder(engine, folder, shot_ids, Path(args.out) if args.out else None)
    kind = "as animatic" if all(r.animatic for r in result.records) else "with diffusers"
    cut = result.cut if result.cut is not None else f"none yet (missing: {', '.join(result.missing)})"
    _say(f"{len(result.records)} shots rendered {kind}, cut: {cut}")
    print(result.folder)
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    report = run_doctor(settings, tiny_renders=not args.no_render)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1


def cmd_schema(args: argparse.Namespace) -> int:
    for path in write_schemas(Path(args.out)):
        print(path)
    print(write_atomic(Path(args.out) / MANIFEST_SCHEMA, manifest_schema()))
    return 0


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nightshift", description="Script in the evening, dailies in the morning, on your own GPU."
    )
    parser.add_argument("--version", action="version", version=f"nightshift {__version__}")
    parser.add_argument("--config", help=f"a {CONFIG_FILE_NAME} (default: ./{CONFIG_FILE_NAME} if present)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create inbox/, output/ and a commented nightshift.toml")
    init.add_argument("dir", nargs="?", default=".")

    plan = commands.add_parser("plan", help="script -> shotlist.json, shotlist.md, renderplan.json")
    plan.add_argument("script", nargs="?", help="a .fountain, .md or .txt script")
    plan.add_argument("--planner", choices=("auto", "ollama", "rules"), help="default: planner.kind (auto)")
    plan.add_argument("--out", help="output folder (default: <output>/plans/<script-slug>)")
    plan.add_argument("--family", choices=FAMILY_NAMES, help="target video model family")
    plan.add_argument("--model", help="Ollama model for planning (default: planner.model)")
    plan.add_argument("--from-shotlist", metavar="SHOTLIST", help="rebuild the render plan from an edited shotlist.json")

    render = commands.add_parser("render", help="render a plan folder: 4K shot clips and the assembled cut")
    render.add_argument("plan", help="a plan folder (or its renderplan.json)")
    render.add_argument("--renderer", choices=("auto", "diffusers", "animatic", "comfyui"),
                        help="auto (default): diffusers when CUDA and the weights are here, else the animatic")
    render.add_argument("--shots", help="comma-separated shot ids to (re-)render, e.g. s03-sh02")
    render.add_argument("--out", help="output folder (default: the plan folder)")
    render.add_argument("--fit", choices=("pad", "crop"), help="keep the aspect at 3840x2160 by padding or cropping")
    render.add_argument("--sharpen", type=float, help="FFmpeg cas strength 0-1 after upscaling")
    render.add_argument("--quantization", choices=("auto", *QUANTIZATION_MODES))
    render.add_argument("--device", help="auto, cpu, cuda or cuda:N")

    cli_night.add_commands(commands)
    cli_queue.add_commands(commands)
    cli_provenance.add_commands(commands)
    cli_review.add_commands(commands)

    doctor = commands.add_parser("doctor", help="what will run tonight on this machine: GPU, quantization, encoders, "
                                               "Ollama, models, disk, the queue, a tiny render per family")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--no-render", action="store_true", help="skip the tiny render per family")

    schema = commands.add_parser("schema", help="write the JSON Schemas for shotlist.json, renderplan.json, manifest.json")
    schema.add_argument("--out", default=".", help="folder to write them into")
    return parser


def _settings_for(args: argparse.Namespace) -> Settings:
    settings = load_settings(Path(args.config) if args.config else None)
    if getattr(args, "family", None):
        settings.render.family = args.family
    if getattr(args, "model", None):
        settings.planner.model = args.model
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            return cmd_init(args)
        if args.command == "schema":
            return cmd_schema(args)
        settings = _settings_for(args)
        if args.command == "plan":
            return cmd_plan(args, settings)
        if args.command == "render":
            return cmd_render(args, settings)
        if args.command == "doctor":
            return cmd_doctor(args, settings)
        if args.command in ("run", "serve"):
            return getattr(cli_night, f"cmd_{args.command}")(args, settings, _say)
        if args.command == "queue":
            return cli_queue.cmd_queue(args, settings, _say)
        if args.command in ("review", "mark"):
            return getattr(cli_review, f"cmd_{args.command}")(args, settings, _say)
        if args.command in ("verify", "reproduce"):
            return getattr(cli_provenance, f"cmd_{args.command}")(args, settings, _say)
    except NightshiftError as error:
        _say(f"error: {error.report()}")
        return 1
    except (ValueError, FileNotFoundError) as error:
        _say(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
