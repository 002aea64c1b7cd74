"""`nightshift init`: a project folder with inbox/, output/ and a commented nightshift.toml."""

from __future__ import annotations

from pathlib import Path

import tomli_w
from pydantic import BaseModel

from nightshift.config import CONFIG_FILE_NAME, Settings
from nightshift.signing import SIGNING_DIR, create_local_identity


def _commented_section(name: str, section: BaseModel) -> list[str]:
    lines = [f"[{name}]"]
    nested = []
    for field_name, field in type(section).model_fields.items():
        value = getattr(section, field_name)
        if isinstance(value, BaseModel):  # a table of its own, after this one's keys ([render.comfyui])
            nested += [""] + _commented_section(f"{name}.{field_name}", value)
            continue
        if field.description:
            lines.append(f"# {field.description}")
        if value is None:
            lines.append(f"# {field_name} =")
        else:
            encoded = tomli_w.dumps({field_name: str(value) if isinstance(value, Path) else value}).strip()
            lines += [f"# {line}" for line in encoded.splitlines()]  # a list spans lines: each one commented
    return lines + nested


def default_config_text() -> str:
    """Every setting with its default, commented out: uncomment a line to change it."""
    defaults = Settings(project_dir=Path("."))
    lines = [
        "# Nightshift settings. Every line below shows a default; uncomment to change it.",
        "# Environment variables override this file: NIGHTSHIFT_PLANNER__MODEL=llama3.2:3b, ...",
        "",
    ]
    for name in ("planner", "pacing", "render", "paths", "intake", "night", "signing"):
        lines += _commented_section(name, getattr(defaults, name)) + [""]
    return "\n".join(lines)


def init_project(folder: Path) -> list[Path]:
    """Create what is missing; never overwrite a user's file. Returns what was created."""
    created = []
    for sub in ("inbox", "output"):
        path = folder / sub
        if not path.is_dir():
            path.mkdir(parents=True)
            created.append(path)
    config = folder / CONFIG_FILE_NAME
    if not config.exists():
        config.write_text(default_config_text(), encoding="utf-8")
        created.append(config)

    if not (folder / SIGNING_DIR).is_dir():
        identity = create_local_identity(folder / SIGNING_DIR, owner=folder.resolve().name)
        created += [identity.chain, identity.key]
    return created
