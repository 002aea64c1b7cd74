"""Script intake: bytes on disk -> a validated Script.

Decoding is defensive (BOMs, UTF-16, Latin-1, binary detection, size limits)
because scripts arrive from every editor there is, and a bad file must get a
clear error naming it rather than a crash or a silent empty plan.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nightshift.agents.fountain import parse_fountain
from nightshift.errors import ScriptError
from nightshift.files import fit_name
from nightshift.schemas import NAME_MAX, TITLE_MAX, Character, ElementKind, Scene, SceneElement, Script

ScriptFormat = Literal["fountain", "markdown", "prose"]

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_FOUNTAIN_HINT = re.compile(r"^(\s*(INT|EXT|EST|INT\./EXT|I/E)[. ]|Title\s*:)", re.IGNORECASE | re.MULTILINE)
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)")
_MD_DIALOGUE = re.compile(r"^\**([A-Z][A-Z0-9 .'#-]{1,30}?)\**\s*:\s*\**\s*(.+)$")
_SCENE_PREFIX = re.compile(r"^(scene|sc\.?)\s*\d+\s*[-\u2013\u2014:.]*\s*", re.IGNORECASE)
_TIMES = ("dawn", "sunrise", "morning", "day", "noon", "afternoon", "dusk", "sunset", "evening", "night", "midnight")
SUFFIX_FORMATS: dict[str, ScriptFormat] = {
    ".fountain": "fountain",
    ".spmd": "fountain",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "prose",
    ".text": "prose",
}


@dataclass(frozen=True)
class DecodedText:
    text: str
    encoding: str
    sha256: str


def _too_large(path: Path, size: int, max_bytes: int) -> ScriptError:
    # Checked before reading, so a 50 MB drop never lands in memory.
    return ScriptError(path, f"the file is {size / 1e6:.1f} MB; scripts are accepted up to {max_bytes / 1e6:.1f} MB",
                       "split it, or raise intake.max_script_mb in nightshift.toml")


def decode_script_bytes(data: bytes, path: Path, max_bytes: int) -> DecodedText:
    """Decode a script file's bytes, or raise ScriptError naming the file and the problem."""
    if len(data) > max_bytes:
        raise _too_large(path, len(data), max_bytes)
    sha = hashlib.sha256(data).hexdigest()
    encoding = ""
    body = data
    for bom, name in _BOMS:
        if data.startswith(bom):
            encoding, body = name, data[len(bom) :]
            break
    if not encoding:
        if b"\x00" in data:
            raise ScriptError(path, "this looks like a binary file (it contains NUL bytes), not a script",
                              "save the script as plain text, Fountain (.fountain) or Markdown (.md)")
        try:
            text = data.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            # Latin-1 decodes any byte; cp1252 is what Windows editors mean by it.
            try:
                text = data.decode("cp1252")
                encoding = "cp1252"
            except UnicodeDecodeError:
                text = data.decode("latin-1")
                encoding = "latin-1"
    else:
        try:
            text = body.decode(encoding)
        except UnicodeDecodeError as error:
            raise ScriptError(path, f"the file starts with a {encoding} byte-order mark but is not valid {encoding}: {error}") from None

    controls = len(_CONTROL.findall(text))
    if controls and controls > max(2, len(text) // 200):
        raise ScriptError(path, f"this looks like a binary file ({controls} control characters), not a script",
                          "save the script as plain text, Fountain (.fountain) or Markdown (.md)")
    text = _CONTROL.sub("", text).replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    if not text.strip():
        raise ScriptError(path, "the file is empty (or only whitespace)", "write at least one scene or a one-line idea")
    return DecodedText(text=text, encoding=encoding, sha256=sha)


def detect_format(path: Path, text: str) -> ScriptFormat:
    by_suffix = SUFFIX_FORMATS.get(path.suffix.lower())
    if by_suffix in ("fountain", "markdown"):
        return by_suffix
    if _FOUNTAIN_HINT.search(text):
        return "fountain"
    if any(_MD_HEADING.match(line) for line in text.splitlines()):
        return "markdown"
    return "prose"


def _strip_markdown(text: str) -> str:
    return _MD_EMPHASIS.sub("", _MD_LINK.sub(r"\1", text)).strip()


def _paragraphs(text: str) -> list[str]:
    blocks = re.split(r"\n\s*\n", text.expandtabs(4))
    return [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in blocks if block.strip()]


def _time_of_day(text: str) -> str:
    words = set(re.findall(r"[a-z]+", text.lower()))
    return next((t.upper() for t in _TIMES if t in words), "")


def _prose_elements(paragraphs: list[str]) -> list[SceneElement]:
    elements = []
    for paragraph in paragraphs:
        match = _MD_DIALOGUE.match(paragraph)
        if match:
            elements.append(SceneElement(kind=ElementKind.dialogue, character=match.group(1).strip(), text=match.group(2).strip()))
        else:
            elements.append(SceneElement(kind=ElementKind.action, text=paragraph))
    return elements


def parse_markdown(text: str) -> tuple[str | None, list[Scene]]:
    """A treatment: one heading per scene. A lone top-level heading above the scenes is the title."""
    lines = text.expandtabs(4).splitlines()
    headings = [(i, len(m.group(1)), m.group(2)) for i, line in enumerate(lines) if (m := _MD_HEADING.match(line))]
    title = None
    if headings:
        levels = [level for _, level, _ in headings]
        top = min(levels)
        if levels.count(top) == 1 and len(headings) > 1 and headings[0][1] == top:
            title = _strip_markdown(headings[0][2])
            headings = headings[1:]
    if not headings:
        return title, []
    scene_level = min(level for _, level, _ in headings)
    starts = [(i, h) for i, level, h in headings if level == scene_level]
    scenes = []
    for number, (line_index, heading) in enumerate(starts, start=1):
        end = starts[number][0] if number < len(starts) else len(lines)
        body = "\n".join(l for l in lines[line_index + 1 : end] if not _MD_HEADING.match(l))
        paragraphs = [_strip_markdown(p) for p in _paragraphs(body)]
        heading_text = _strip_markdown(heading)
        location = _SCENE_PREFIX.sub("", heading_text).strip() or heading_text
        scenes.append(
            Scene(
                number=number,
                heading=heading_text,
                location=location,
                time_of_day=_time_of_day(heading_text + " " + " ".join(paragraphs[:1])),
                elements=_prose_elements([p for p in paragraphs if p]),
            )
        )
    return title, scenes


def parse_prose(text: str) -> list[Scene]:
    """Plain prose: each paragraph block is a scene; a one-line idea is one scene."""
    scenes = []
    for number, paragraph in enumerate(_paragraphs(text), start=1):
        first_sentence = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
        heading = first_sentence if len(first_sentence) <= 80 else first_sentence[:77].rsplit(" ", 1)[0] + "..."
        scenes.append(
            Scene(
                number=number,
                heading=heading,
                time_of_day=_time_of_day(paragraph),
                elements=_prose_elements([paragraph]),
            )
        )
    return scenes


def collect_characters(scenes: list[Scene]) -> list[Character]:
    """Speakers in script order, with the action text that first introduces each."""
    counts: dict[str, int] = {}
    for scene in scenes:
        for element in scene.elements:
            if element.kind is ElementKind.dialogue and element.character:
                counts[element.character] = counts.get(element.character, 0) + 1
    characters = []
    for name in counts:
        introduction = ""
        pattern = re.compile(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])")
        for scene in scenes:
            hit = next((e.text for e in scene.elements if e.kind is ElementKind.action and pattern.search(e.text)), None)
            if hit:
                start = pattern.search(hit).start()  # type: ignore[union-attr]
                sentence_end = re.search(r"[.!?](\s|$)", hit[start:])
                introduction = hit[start : start + sentence_end.end()].strip() if sentence_end else hit[start:].strip()
                break
        characters.append(Character.model_construct(name=name, introduction=introduction, dialogue_lines=counts[name]))
    return characters


def title_from_path(path: Path) -> str:
    words = re.sub(r"[_\-.]+", " ", path.stem).strip()
    return words.title() if words else "Untitled"


def parse_script_text(text: str, path: Path, fmt: ScriptFormat | None = None, max_scenes: int = 2000) -> Script:
    """Parse decoded script text. `path` is only used for its name (in errors and the title)."""
    fmt = fmt or detect_format(path, text)
    title_page: dict[str, str] = {}
    title = None
    if fmt == "fountain":
        title_page, scenes = parse_fountain(text)
        title = title_page.get("title")
    elif fmt == "markdown":
        title, scenes = parse_markdown(text)
        if not scenes:  # headings absent or all used up as title: treat the body as prose
            scenes = parse_prose("\n".join(l for l in text.splitlines() if not _MD_HEADING.match(l)))
    else:
        scenes = parse_prose(text)
    if not scenes:
        raise ScriptError(path, f"no scenes found in this {fmt} file",
                          "Fountain needs scene headings (INT./EXT.), Markdown one heading per scene, prose one paragraph per scene")
    if len(scenes) > max_scenes:
        raise ScriptError(path, f"{len(scenes)} scenes is more than the limit of {max_scenes}",
                          "split the script, or raise intake.max_scenes in nightshift.toml")
    title = title or title_from_path(path)
    if len(title) > TITLE_MAX:
        raise ScriptError(path, f"the title is {len(title)} characters long; at most {TITLE_MAX} are accepted",
                          "shorten the Title: line of the title page (or the first heading)")
    characters = collect_characters(scenes)
    for character in characters:
        if len(character.name) > TITLE_MAX:
            raise ScriptError(path, f"a character cue is {len(character.name)} characters long (at most {TITLE_MAX}): "
                              f"{character.name[:60]}...", "a character cue is a name on its own line, in capitals")
    return Script(
        source_name=fit_name(path.name, NAME_MAX),
        format=fmt,
        title=title,
        title_page=title_page,
        scenes=scenes,
        characters=characters,
    )


def read_script(path: Path, max_bytes: int = 10_000_000, max_scenes: int = 2000) -> tuple[Script, DecodedText]:
    """Read and parse a script file; every failure is a ScriptError naming the file."""
    if not path.exists():
        raise ScriptError(path, "no such file")
    if not path.is_file():
        raise ScriptError(path, "not a regular file (a folder or device?)", "give the path of a script file")
    size = path.stat().st_size
    if size > max_bytes:
        raise _too_large(path, size, max_bytes)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ScriptError(path, f"cannot be read: {error.strerror}") from None
    decoded = decode_script_bytes(data, path, max_bytes)
    return parse_script_text(decoded.text, path, max_scenes=max_scenes), decoded
