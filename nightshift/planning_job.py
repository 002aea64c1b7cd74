"""The planning job as plain functions: script file -> plan folder, edited shot list -> new render plan."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from nightshift.agents.intake import read_script
from nightshift.agents.planning import PlannerChoice, ProgressCallback, plan_script
from nightshift.agents.prompt_writer import write_render_plan
from nightshift.config import Settings
from nightshift.files import now_utc
from nightshift.edits import PROVENANCE_DIR, record_edits, start_history
from nightshift.plan_files import (
    load_shotlist,
    write_renderplan,
    write_schemas,
    write_shotlist,
    write_shotlist_md,
)
from nightshift.renderers.storyboard import write_storyboard
from nightshift.schemas import RenderPlan, ShotList, slugify
from nightshift.templating import TemplateSet


@dataclass(frozen=True)
class PlanResult:
    folder: Path
    shotlist: ShotList
    plan: RenderPlan
    shotlist_path: Path
    renderplan_path: Path


def default_plan_folder(settings: Settings, title: str) -> Path:
    return settings.resolve(settings.paths.output) / "plans" / slugify(title)


def plan_script_file(
    script_path: Path,
    settings: Settings,
    planner: PlannerChoice | None = None,
    out_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    storyboard: bool = True,
) -> PlanResult:
    """Read, parse and plan a script; write shotlist.json, shotlist.md, renderplan.json, their schemas and (unless
    `storyboard` is False: the night's work folders get theirs, with rendered frames, at delivery) storyboard.pdf."""
    script, decoded = read_script(
        script_path,
        max_bytes=int(settings.intake.max_script_mb * 1_000_000),
        max_scenes=settings.intake.max_scenes,
    )
    shotlist = plan_script(script, decoded.sha256, settings, choice=planner, progress=progress)
    folder = out_dir or default_plan_folder(settings, script.title)
    templates = TemplateSet(settings.templates_override_dir)
    write_schemas(folder)
    shotlist_path, shotlist_sha = write_shotlist(folder, shotlist, templates)
    exchanges = [settings.planner_cache_dir / key[:2] / f"{key}.json" for key in shotlist.planner.exchanges]
    start_history(folder, shotlist, script_path, script_path.name, [p for p in exchanges if p.is_file()])
    plan = write_render_plan(shotlist, shotlist_sha, settings.render, templates)
    renderplan = write_renderplan(folder, plan)
    if storyboard:
        write_storyboard(folder, shotlist, plan)
    return PlanResult(folder, shotlist, plan, shotlist_path, renderplan)


def plan_from_shotlist(shotlist_path: Path, settings: Settings, out_dir: Path | None = None,
                       source: str = "nightshift plan --from-shotlist", storyboard: bool = True,
                       who: str | None = None, notes: dict[str, str] | None = None) -> PlanResult:
    """Rebuild renderplan.json (and shotlist.md) from a shotlist.json the user edited; the json is not rewritten.

    The changes since the last shot list seen are appended to the edit history (provenance/edits.json)."""
    shotlist, shotlist_sha = load_shotlist(shotlist_path)
    folder = out_dir or shotlist_path.parent
    if folder.resolve() != shotlist_path.parent.resolve() and (shotlist_path.parent / PROVENANCE_DIR).is_dir():
        shutil.copytree(shotlist_path.parent / PROVENANCE_DIR, folder / PROVENANCE_DIR, dirs_exist_ok=True)
    record_edits(folder, shotlist, now_utc(), source, who, notes)
    templates = TemplateSet(settings.templates_override_dir)
    write_schemas(folder)
    write_shotlist_md(folder, shotlist, templates)
    plan = write_render_plan(shotlist, shotlist_sha, settings.render, templates)
    renderplan = write_renderplan(folder, plan)
    if storyboard:
        write_storyboard(folder, shotlist, plan)
    return PlanResult(folder, shotlist, plan, shotlist_path, renderplan)
