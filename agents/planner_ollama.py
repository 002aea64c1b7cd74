"""The shot planner on a local language model, through the official `ollama` client.

One chat call per scene keeps the context small; the answer is constrained with
`format=` (the JSON Schema of a scene's shots), decoded at temperature 0 with a
fixed seed, validated, and sent back with its error when it does not validate
(a bounded repair loop). Every validated answer is cached by what shaped it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama
from pydantic import BaseModel, Field, ValidationError

from nightshift.agents.planner_cache import PlannerCache, cache_key
from nightshift.agents.planner_rules import scene_setting
from nightshift.config import PacingSettings, PlannerSettings
from nightshift.errors import OllamaModelMissing, OllamaUnavailable, PlannerError, PlannerOutputError
from nightshift.schemas import SCHEMA_VERSION, CameraMove, Framing, Scene, SceneShotPlan, Script, ShotDraft, Transition
from nightshift.templating import TemplateSet

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_TRANSIENT_RETRIES = 2


class BibleEntry(BaseModel):
    name: str
    description: str = Field(min_length=3)


class CharacterBibleAnswer(BaseModel):
    characters: list[BibleEntry]


def normalize_host(host: str) -> str:
    """'127.0.0.1' -> 'http://127.0.0.1:11434', as Ollama's own clients read OLLAMA_HOST."""
    host = host.strip() or "127.0.0.1"
    if "://" not in host:
        host = f"http://{host}"
    parts = urlsplit(host)
    port = parts.port or (443 if parts.scheme == "https" else 11434)
    return f"{parts.scheme}://{parts.hostname}:{port}{parts.path.rstrip('/')}"


def ollama_version(host: str, timeout_s: float = 3.0) -> str | None:
    """The server's version, or None when nothing answers (a quick reachability probe)."""
    try:
        response = httpx.get(f"{normalize_host(host)}/api/version", timeout=timeout_s)
        response.raise_for_status()
        return str(response.json().get("version", "unknown"))
    except (httpx.HTTPError, ValueError):
        return None


@dataclass
class Exchange:
    """One validated model answer and everything that produced it."""

    key: str
    messages: list[dict[str, str]]
    response: str
    parsed: dict[str, Any]
    attempts: int
    cached: bool


@dataclass
class OllamaShotPlanner:
    settings: PlannerSettings
    pacing: PacingSettings
    templates: TemplateSet
    cache: PlannerCache
    client: ollama.Client = field(init=False)
    model_digest: str | None = field(default=None, init=False)
    calls: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.host = normalize_host(self.settings.ollama_host)
        self.client = ollama.Client(host=self.host, timeout=self.settings.timeout_s)

    @property
    def options(self) -> dict[str, Any]:
        return {"temperature": self.settings.temperature, "seed": self.settings.seed, "num_ctx": self.settings.num_ctx}

    # ------------------------------------------------------------------ checks

    def check(self) -> str | None:
        """Make sure the server answers and has the model; returns the model's digest."""
        try:
            listing = self.client.list()
        except ConnectionError:
            raise OllamaUnavailable(f"Ollama is not reachable at {self.host}") from None
        except httpx.TimeoutException:
            raise OllamaUnavailable(f"Ollama at {self.host} did not answer within {self.settings.timeout_s:g}s") from None
        except ollama.ResponseError as error:
            raise OllamaUnavailable(f"Ollama at {self.host} answered {error.status_code}: {error.error}") from None
        wanted = self.settings.model if ":" in self.settings.model else f"{self.settings.model}:latest"
        for model in listing.models:
            if model.model in (wanted, self.settings.model):
                self.model_digest = model.digest
                return model.digest
        raise OllamaModelMissing(self.settings.model, self.host)

    # ------------------------------------------------------------------ calls

    def _chat(self, messages: list[dict[str, str]], schema: dict[str, Any], what: str) -> str:
        """One chat call; retries server errors briefly, turns transport failures into PlannerErrors."""
        for attempt in range(_TRANSIENT_RETRIES + 1):
            try:
                self.calls += 1
                response = self.client.chat(
                    model=self.settings.model, messages=messages, format=schema, options=self.options, stream=False
                )
                return _THINK.sub("", response.message.content or "").strip()
            except ConnectionError:
                raise OllamaUnavailable(f"Ollama stopped answering at {self.host} while planning {what}") from None
            except httpx.TimeoutException:
                raise PlannerError(
                    f"Ollama took longer than {self.settings.timeout_s:g}s for {what} (model {self.settings.model})",
                    "raise planner.timeout_s, use a smaller model, or use --planner rules",
                ) from None
            except httpx.TransportError as error:  # the connection dropped mid-answer
                if attempt == _TRANSIENT_RETRIES:
                    raise PlannerError(f"the connection to Ollama broke while planning {what}: {error}") from None
            except ollama.ResponseError as error:
                if error.status_code == 404:
                    raise OllamaModelMissing(self.settings.model, self.host) from None
                if error.status_code < 500 or attempt == _TRANSIENT_RETRIES:
                    raise PlannerError(f"Ollama answered {error.status_code} for {what}: {error.error}") from None
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _ask(self, key_material: dict[str, Any], messages: list[dict[str, str]], schema: dict[str, Any],
             validate: Any, what: str) -> Exchange:
        """Ask until an answer validates (at most 1 + max_repairs calls), with caching."""
        key = cache_key(key_material)
        hit = self.cache.get(key)
        if hit is not None:
            return Exchange(key, hit["messages"], hit["response"], hit["parsed"], hit["attempts"], cached=True)
        conversation = list(messages)
        error = ""
        for attempt in range(1, self.settings.max_repairs + 2):
            content = self._chat(conversation, schema, what)
            try:
                parsed = validate(content)
            except (ValidationError, ValueError) as problem:
                error = _short_error(problem)
                conversation += [
                    {"role": "assistant", "content": content[:8000]},
                    {"role": "user", "content": self.templates.render("planner_repair.j2", error=error)},
                ]
                continue
            self.cache.put(key, {"material": key_material, "messages": messages, "response": content,
                                 "parsed": parsed, "attempts": attempt})
            return Exchange(key, messages, content, parsed, attempt, cached=False)
        raise PlannerOutputError(
            f"the model {self.settings.model} gave no usable answer for {what} after {self.settings.max_repairs + 1} tries; last problem: {error}",
            "try another model (planner.model), raise planner.max_repairs, or use --planner rules",
        )

    # ------------------------------------------------------------------ planning

    def template_hashes(self, *names: str) -> dict[str, str]:
        return {name: self.templates.sha256(name) for name in names}

    def character_bible(self, script: Script) -> tuple[dict[str, str], Exchange]:
        names = [c.name for c in script.characters]
        prompt = self.templates.render("character_bible.j2", title=script.title,
                                       characters=[c.model_dump() for c in script.characters])
        messages = [{"role": "user", "content": prompt}]
        material = {"kind": "character_bible", "prompt": prompt, "model": self.settings.model,
                    "digest": self.model_digest, "options": self.options,
                    "templates": self.template_hashes("character_bible.j2", "planner_repair.j2")}

        def validate(content: str) -> dict[str, Any]:
            answer = CharacterBibleAnswer.model_validate_json(content)
            found = {entry.name.strip().upper(): entry.description.strip() for entry in answer.characters}
            missing = [name for name in names if name.upper() not in found]
            if missing:
                raise ValueError(f"no description for {', '.join(missing)}; describe every character listed")
            return {name: found[name.upper()] for name in names}

        exchange = self._ask(material, messages, CharacterBibleAnswer.model_json_schema(), validate, "the character bible")
        return dict(exchange.parsed), exchange

    def plan_scene(self, scene: Scene, script: Script, bible: dict[str, str], style: str) -> tuple[list[ShotDraft], Exchange]:
        names = [c.name for c in script.characters]
        system = self.templates.render(
            "planner_system.j2",
            max_shots=self.settings.max_shots_per_scene,
            min_s=self.pacing.min_shot_s,
            max_s=self.pacing.max_shot_s,
            dialogue_wpm=self.pacing.dialogue_words_per_minute,
            framings=[f.value for f in Framing],
            camera_moves=[c.value for c in CameraMove],
            transitions=[t.value for t in Transition],
            character_names=names,
            bible=bible,
            style=style,
        )
        user = self.templates.render("planner_scene.j2", scene=scene.model_dump(mode="json"), title=script.title,
                                     setting=scene_setting(scene), scene_text=scene.text())
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        material = {"kind": "scene", "schema_version": SCHEMA_VERSION, "messages": messages,
                    "model": self.settings.model, "digest": self.model_digest, "options": self.options,
                    "templates": self.template_hashes("planner_system.j2", "planner_scene.j2", "planner_repair.j2")}

        def validate(content: str) -> dict[str, Any]:
            plan = SceneShotPlan.model_validate_json(content)
            problems = []
            if len(plan.shots) > self.settings.max_shots_per_scene:
                problems.append(f"{len(plan.shots)} shots is more than {self.settings.max_shots_per_scene}")
            for number, shot in enumerate(plan.shots, start=1):
                if not self.pacing.min_shot_s / 2 <= shot.duration_s <= self.pacing.max_shot_s * 2:
                    problems.append(f"shot {number} lasts {shot.duration_s}s, outside {self.pacing.min_shot_s}-{self.pacing.max_shot_s}s")
                unknown = [name for name in shot.characters if name not in names]
                if unknown:
                    problems.append(f"shot {number} names unknown characters {unknown}; use only {names or 'none'}")
            if problems:
                raise ValueError("; ".join(problems[:5]))
            return plan.model_dump(mode="json")

        exchange = self._ask(material, messages, SceneShotPlan.model_json_schema(), validate, f"scene {scene.number}")
        return [ShotDraft.model_validate(shot) for shot in exchange.parsed["shots"]], exchange


def _short_error(problem: Exception) -> str:
    if isinstance(problem, ValidationError):
        details = [f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in problem.errors()[:6]]
        return "; ".join(details)
    text = str(problem)
    if isinstance(problem, json.JSONDecodeError):
        return f"not valid JSON ({problem.msg} at character {problem.pos})"
    return text[:600]
