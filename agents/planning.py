"""Script -> ShotList: choose a planner, build the character bible once, plan scene by scene."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from nightshift.agents.planner_cache import PlannerCache
from nightshift.agents.planner_ollama import OllamaShotPlanner, normalize_host, ollama_version
from nightshift.agents.planner_rules import RulesPlanner, pronouns_of, scene_setting
from nightshift.config import Settings
from nightshift.errors import OllamaModelMissing, OllamaUnavailable, PlannerError
from nightshift.schemas import PlannerInfo, SceneSummary, Script, Shot, ShotDraft, ShotList
from nightshift.templating import TemplateSet

PlannerChoice = Literal["auto", "ollama", "rules"]
ProgressCallback = Callable[[int, int, str], None]
PLANNER_TEMPLATES = ("planner_system.j2", "planner_scene.j2", "planner_repair.j2", "character_bible.j2")
_PARENTHETICAL = re.compile(r"^[A-Z0-9 .'#-]+\s*\(([^)]*)\)")


def rules_character_bible(script: Script) -> dict[str, str]:
    """Name -> the description the script gives where the character first appears (editable later)."""
    bible = {}
    for character in script.characters:
        match = _PARENTHETICAL.match(character.introduction)
        bible[character.name] = match.group(1).strip() if match else ""
    return bible


def shot_id(scene_number: int, shot_number: int) -> str:
    return f"s{scene_number:02d}-sh{shot_number:02d}"


def _to_shots(scene_number: int, drafts: list[ShotDraft], planned_by: str) -> list[Shot]:
    return [
        Shot(id=shot_id(scene_number, n), scene=scene_number, planned_by=planned_by, **draft.model_dump())
        for n, draft in enumerate(drafts, start=1)
    ]


def _choose_planner(choice: PlannerChoice, settings: Settings, notes: list[str]) -> OllamaShotPlanner | None:
    if choice == "rules":
        notes.append("rules planner chosen")
        return None
    planner = OllamaShotPlanner(
        settings=settings.planner,
        pacing=settings.pacing,
        templates=TemplateSet(settings.templates_override_dir),
        cache=PlannerCache(settings.planner_cache_dir),
    )
    if choice == "auto":
        host = normalize_host(settings.planner.ollama_host)
        version = ollama_version(host)
        if version is None:
            notes.append(f"Ollama not reachable at {host}: planned with the rules planner")
            return None
        try:
            planner.check()
        except (OllamaUnavailable, OllamaModelMissing) as error:
            notes.append(f"{error} ({error.hint}): planned with the rules planner")
            return None
        notes.append(f"Ollama {version} at {host} with {settings.planner.model}")
        return planner
    planner.check()  # explicit choice: errors are the user's to see
    return planner


def plan_script(
    script: Script,
    source_sha256: str,
    settings: Settings,
    choice: PlannerChoice | None = None,
    progress: ProgressCallback | None = None,
) -> ShotList:
    """Plan every scene of a script into one ShotList. Deterministic for a given planner and input."""
    choice = choice or settings.planner.kind
    notes: list[str] = []
    warnings: list[str] = []
    llm = _choose_planner(choice, settings, notes)
    rules = RulesPlanner(settings.pacing)
    names = [c.name for c in script.characters]
    pronouns = pronouns_of(script.scenes, names)
    style = settings.render.style
    exchanges: list[str] = []

    bible = rules_character_bible(script)
    if llm is not None and script.characters:
        try:
            bible, exchange = llm.character_bible(script)
            exchanges.append(exchange.key)
        except PlannerError as error:
            if settings.planner.on_failure == "fail" or isinstance(error, (OllamaUnavailable, OllamaModelMissing)):
                raise
            warnings.append(f"character bible: {error}; kept the descriptions from the script")

    shots: list[Shot] = []
    total = len(script.scenes)
    for done, scene in enumerate(script.scenes):
        if progress:
            progress(done, total, scene.heading)
        if llm is None:
            shots += _to_shots(scene.number, rules.plan_scene(scene, names, pronouns), "rules")
            continue
        try:
            drafts, exchange = llm.plan_scene(scene, script, bible, style)
            exchanges.append(exchange.key)
            shots += _to_shots(scene.number, drafts, f"ollama:{settings.planner.model}")
        except PlannerError as error:
            if settings.planner.on_failure == "fail" or isinstance(error, OllamaModelMissing):
                raise
            warnings.append(f"scene {scene.number} ({scene.heading}): {error}; planned with the rules planner instead")
            shots += _to_shots(scene.number, rules.plan_scene(scene, names, pronouns), "rules (fallback)")
    if progress:
        progress(total, total, "done")

    info = PlannerInfo(
        kind="ollama" if llm is not None else "rules",
        model=settings.planner.model if llm is not None else None,
        model_digest=llm.model_digest if llm is not None else None,
        templates=llm.template_hashes(*PLANNER_TEMPLATES) if llm is not None else {},
        options=llm.options if llm is not None else {},
        pace_words_per_minute=settings.pacing.dialogue_words_per_minute,
        exchanges=exchanges,
        notes=notes,
    )
    return ShotList(
        title=script.title,
        source_name=script.source_name,
        source_sha256=source_sha256,
        planner=info,
        style_bible=style,
        character_bible=bible,
        scenes=[SceneSummary(number=s.number, heading=s.heading, setting=scene_setting(s)) for s in script.scenes],
        shots=shots,
        warnings=warnings,
    )
