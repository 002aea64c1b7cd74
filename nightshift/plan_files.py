"""Reading and writing the plan files a user sees and edits: shotlist.json/.md, renderplan.json, schemas."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from nightshift.errors import ShotListError
from nightshift.files import sha256_text, write_atomic
from nightshift.schemas import RenderPlan, ShotList
from nightshift.templating import TemplateSet

SHOTLIST_JSON = "shotlist.json"
SHOTLIST_MD = "shotlist.md"
RENDERPLAN_JSON = "renderplan.json"
SHOTLIST_SCHEMA = "shotlist.schema.json"
RENDERPLAN_SCHEMA = "renderplan.schema.json"
SCHEMA_FILES: dict[str, type[BaseModel]] = {SHOTLIST_SCHEMA: ShotList, RENDERPLAN_SCHEMA: RenderPlan}


def json_schema_text(model: type[BaseModel]) -> str:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    # Files carry a "$schema" pointer to this schema so editors validate them.
    schema.setdefault("properties", {})["$schema"] = {"type": "string"}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    return [write_atomic(folder / name, json_schema_text(model)) for name, model in SCHEMA_FILES.items()]


def model_json(model: BaseModel, schema_file: str) -> str:
    data = {"$schema": f"./{schema_file}", **model.model_dump(mode="json")}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_shotlist(folder: Path, shotlist: ShotList, templates: TemplateSet) -> tuple[Path, str]:
    """Write shotlist.json and shotlist.md; returns the json path and its sha256."""
    text = model_json(shotlist, SHOTLIST_SCHEMA)
    path = write_atomic(folder / SHOTLIST_JSON, text)
    write_shotlist_md(folder, shotlist, templates)
    return path, sha256_text(text)


def write_shotlist_md(folder: Path, shotlist: ShotList, templates: TemplateSet) -> Path:
    markdown = templates.render(
        "shotlist.md.j2", shotlist=shotlist.model_dump(mode="json"), total_seconds=shotlist.total_seconds
    )
    return write_atomic(folder / SHOTLIST_MD, markdown)


def write_renderplan(folder: Path, plan: RenderPlan) -> Path:
    return write_atomic(folder / RENDERPLAN_JSON, model_json(plan, RENDERPLAN_SCHEMA))


def _load(path: Path, model: type[BaseModel]) -> tuple[BaseModel, str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        error = ShotListError(path, "no such file")
        error.hint = ("`nightshift plan SCRIPT` writes output/plans/<slug>/; after `nightshift run` or a night, "
                      "edit the delivery's own output/<date>/<slug>/shotlist.json and `nightshift render` that folder")
        raise error from None
    try:
        text = raw.decode("utf-8-sig")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ShotListError(path, f"not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ShotListError(path, "expected a JSON object at the top level")
    data.pop("$schema", None)
    try:
        return model.model_validate(data), hashlib.sha256(raw).hexdigest()
    except ValidationError as error:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:20]
        )
        raise ShotListError(path, f"{error.error_count()} problem(s):\n{problems}") from None


def load_shotlist(path: Path) -> tuple[ShotList, str]:
    """A (possibly hand-edited) shotlist.json and the sha256 of its bytes; errors name the field."""
    shotlist, sha = _load(path, ShotList)
    return shotlist, sha  # type: ignore[return-value]


def load_renderplan(path: Path) -> tuple[RenderPlan, str]:
    plan, sha = _load(path, RenderPlan)
    return plan, sha  # type: ignore[return-value]


def load_plan_folder(plan_folder: Path) -> tuple[ShotList, RenderPlan]:
    shotlist, _ = load_shotlist(plan_folder / SHOTLIST_JSON)
    plan, _ = load_renderplan(plan_folder / RENDERPLAN_JSON)
    return shotlist, plan
