"""The one jinja2 environment Nightshift renders with: sandboxed, strict, user-overridable.

Script text only ever arrives as template *variables*. Template *sources* come
from the built-in templates/ folder or the user's override folder, never from a
script, so `{{ ... }}` inside a script is printed as written, not evaluated.
"""

from __future__ import annotations

import hashlib
import html
import re
from importlib.resources import files
from pathlib import Path

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

BUILTIN_TEMPLATES = Path(str(files("nightshift.templates")))  # package data: found in a wheel as in a checkout


def _capitalize_first(text: str) -> str:
    text = str(text).strip()
    return text[:1].upper() + text[1:]


def md_cell(value: object) -> str:
    """Text made safe for one Markdown table cell: no HTML, no pipes, no line breaks, no links."""
    text = html.escape(" ".join(str(value if value is not None else "").split()), quote=True)
    text = text.replace("|", "\\|").replace("`", "\\`").replace("[", "\\[").replace("]", "\\]")
    text = text.replace("*", "\\*").replace("_", "\\_")
    return text


class TemplateSet:
    """Templates by name, from an optional user folder first, then the built-in folder."""

    def __init__(self, override_dir: Path | None = None) -> None:
        folders = [str(d) for d in (override_dir, BUILTIN_TEMPLATES) if d is not None and d.is_dir()]
        self.folders = [Path(f) for f in folders]
        self.env = ImmutableSandboxedEnvironment(
            loader=ChoiceLoader([FileSystemLoader(f) for f in folders]),
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["capitalize_first"] = _capitalize_first
        self.env.filters["md_cell"] = md_cell

    def source_path(self, name: str) -> Path:
        for folder in self.folders:
            candidate = folder / name
            if candidate.is_file():
                return candidate
        raise TemplateNotFound(name)

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.source_path(name).read_bytes()).hexdigest()

    def render(self, name: str, **variables: object) -> str:
        return self.env.get_template(name).render(**variables)

    def render_line(self, name: str, **variables: object) -> str:
        """Render and fold whitespace into single spaces: prompts are one paragraph."""
        return re.sub(r"\s+", " ", self.render(name, **variables)).strip()
