"""The one jinja2 environment Nightshift renders with: sandboxed, strict, user-overridable.

Script text only ever arrives as template *variables*. Template *sources* come
from the built-in templates/ folder or the user's override folder, never from a
script, so `{{ ... }}` inside a script is printed as written, not evaluated.

A user's template runs with limits: its output size, the size of strings and lists it
builds, and its time. A template past a limit, or one that reaches for something the
sandbox forbids, is one line naming the template (TemplateLimit), never a traceback.
"""

from __future__ import annotations

import hashlib
import operator
import re
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

from nightshift.errors import NightshiftError

BUILTIN_TEMPLATES = Path(str(files("nightshift.templates")))  # package data: found in a wheel as in a checkout


def _capitalize_first(text: str) -> str:
    text = str(text).strip()
    return text[:1].upper() + text[1:]


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")
_ENTITY = re.compile(r"&(?=#?\w+;)")


def md_cell(value: object) -> str:
    """Text made safe for one Markdown table cell, and still plain to read: a backslash before what Markdown
    would act on (emphasis, code, links, HTML tags, the cell's pipe, an entity), line breaks folded."""
    text = " ".join(str(value if value is not None else "").split())
    return _ENTITY.sub("\\&", _MARKDOWN_SPECIAL.sub(r"\\\1", text))


MAX_OUTPUT_CHARS = 20_000_000  # a shotlist.md of a 2,000-scene feature is ~2 MB
MAX_VALUE_LEN = 1_000_000  # a string or list a template builds with * or **
MAX_SECONDS = 30.0


class TemplateLimit(NightshiftError):
    """A template went past a limit or broke a sandbox rule."""


class _LimitedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with `*` and `**` bounded: `"x" * 10**9` is refused instead of taking gigabytes."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:  # noqa: ANN401
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise TemplateLimit(f"an exponent of {right} (at most 64)")
            return operator.pow(left, right)
        for value, times in ((left, right), (right, left)):
            if isinstance(value, (str, list, tuple)) and isinstance(times, int) and len(value) * times > MAX_VALUE_LEN:
                raise TemplateLimit(f"a value of {len(value) * times:,} items (at most {MAX_VALUE_LEN:,})")
        return operator.mul(left, right)


class _Deadline:
    """Stops a template's own code (loops that print nothing included) once it runs past its time."""

    def __init__(self, filename: str | None, seconds: float) -> None:
        self.filename, self.deadline = filename, time.monotonic() + seconds

    def local(self, frame: Any, event: str, arg: Any) -> Any:  # noqa: ANN401
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"it ran for more than {MAX_SECONDS:g} s")
        return self.local

    def calls(self, frame: Any, event: str, arg: Any) -> Any:  # noqa: ANN401
        return self.local if event == "call" and frame.f_code.co_filename == self.filename else None

    def __enter__(self) -> _Deadline:
        self.previous = sys.gettrace()
        sys.settrace(self.calls)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self.previous)


class TemplateSet:
    """Templates by name, from an optional user folder first, then the built-in folder."""

    def __init__(self, override_dir: Path | None = None) -> None:
        folders = [str(d) for d in (override_dir, BUILTIN_TEMPLATES) if d is not None and d.is_dir()]
        self.folders = [Path(f) for f in folders]
        self.env = _LimitedSandbox(
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
        try:
            template = self.env.get_template(name)
            chunks, size = [], 0
            with _Deadline(template.filename, MAX_SECONDS):
                for chunk in template.generate(**variables):
                    size += len(chunk)
                    if size > MAX_OUTPUT_CHARS:
                        raise TemplateLimit(f"its output passed {MAX_OUTPUT_CHARS:,} characters")
                    chunks.append(chunk)
            return "".join(chunks)
        except TemplateLimit as error:
            raise TemplateLimit(f"template {self._where(name)}: stopped: {error}",
                                "simplify the template (see the built-in one of the same name)") from None
        except TemplateError as error:
            if isinstance(error, TemplateNotFound) and str(error) == name:
                raise
            raise TemplateLimit(f"template {self._where(name)}: {type(error).__name__}: {error}",
                                "fix the template (see the built-in one of the same name)") from None

    def _where(self, name: str) -> str:
        try:
            return str(self.source_path(name))
        except TemplateNotFound:
            return name

    def render_line(self, name: str, **variables: object) -> str:
        """Render and fold whitespace into single spaces: prompts are one paragraph."""
        return re.sub(r"\s+", " ", self.render(name, **variables)).strip()


def html_templates(override_dir: Path | None = None) -> ImmutableSandboxedEnvironment:
    """The review pages' templates: the same folders (a user may restyle them), every value HTML-escaped."""
    folders = [str(d) for d in (override_dir, BUILTIN_TEMPLATES) if d is not None and d.is_dir()]
    return _LimitedSandbox(loader=ChoiceLoader([FileSystemLoader(f) for f in folders]), undefined=StrictUndefined,
                           autoescape=True, trim_blocks=True, lstrip_blocks=True)
