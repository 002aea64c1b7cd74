"""Fountain screenplays -> Scenes, on top of screenplain's maintained Fountain parser.

screenplain does the lexing (title page, forced headings, boneyard, notes, dual
dialogue, centered text, page breaks); this module turns its paragraphs into our
Scene/SceneElement data and splits character names from their extensions.
"""

from __future__ import annotations

import io
import re

from screenplain import types as sp
from screenplain.parsers import fountain as sp_fountain

from nightshift.schemas import ElementKind, Scene, SceneElement

_HEADING = re.compile(
    r"^(?P<ie>INT\.?/EXT|EXT\.?/INT|I/E|INT|EXT|EST)[.\s]+(?P<rest>.*)$",
    re.IGNORECASE,
)
_TIME_SPLIT = re.compile(r"\s+[-\u2013\u2014]+\s+")
_EXTENSION = re.compile(r"\s*\(([^)]*)\)\s*$")
# Fountain treats only "... TO:" lines as transitions; scripts also end on these.
_LOOSE_TRANSITIONS = re.compile(
    r"^(FADE (IN|OUT|TO BLACK)|CUT TO BLACK|SMASH CUT|DISSOLVE|IRIS (IN|OUT)|WIPE)\b[^a-z]*[.:]?$"
)
_BLANKISH = re.compile(r"^(?!  $)[ \t]+$", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*{1,3}|_)(\S(?:.*?\S)?)\1")


def _unemphasize(text: str) -> str:
    """'_**THE COURIER**_' -> 'THE COURIER'; a lone '*' (as in '7*7') stays."""
    while (stripped := _EMPHASIS.sub(r"\2", text)) != text:
        text = stripped
    return text


def _plain(rich: object) -> str:
    text = str(rich).replace("\u00a0", " ")
    return re.sub(r"[ \t]+", " ", text).strip()


def parse_heading(heading: str) -> tuple[str, str, str]:
    """'EXT. CANAL BRIDGE - NIGHT' -> ('EXT', 'CANAL BRIDGE', 'NIGHT')."""
    match = _HEADING.match(heading.strip())
    if not match:
        return "", heading.strip(), ""
    ie = match.group("ie").upper().replace(".", "")
    interior = {"INT": "INT", "EXT": "EXT", "EST": "EXT"}.get(ie, "INT/EXT")
    parts = _TIME_SPLIT.split(match.group("rest").strip(), maxsplit=1)
    location = parts[0].strip(" .-")
    time_of_day = parts[1].strip(" .-") if len(parts) > 1 else ""
    return interior, location, time_of_day


def split_character(cue: str) -> tuple[str, str | None]:
    """'MARA (V.O.)' -> ('MARA', 'V.O.'); "BOB (CONT'D)" -> ('BOB', "CONT'D"); dual '^' dropped."""
    cue = _plain(cue).rstrip("^").strip()
    extensions: list[str] = []
    while (match := _EXTENSION.search(cue)) is not None:
        extensions.insert(0, match.group(1).strip())
        cue = cue[: match.start()].strip()
    return cue, " ".join(extensions) or None


_TOGETHER = re.compile(r"\s+(?:AND|&)\s+")


def _speech(dialog: sp.Dialog) -> tuple[str | None, str]:
    """(the parenthetical before the first line, the speech with every later parenthetical where it stands)."""
    leading: list[str] = []
    spoken: list[str] = []
    for is_paren, text in dialog.blocks:
        text = _plain(text)
        if is_paren and not spoken:
            leading.append(text)
        elif is_paren:
            spoken.append(text if text.startswith("(") else f"({text})")
        else:
            spoken.append(text)
    return (" ".join(leading) or None), " ".join(spoken)


def _dialogue(dialog: sp.Dialog, dual: bool) -> list[SceneElement]:
    """One element per speaker: "BRICK AND STEEL" (or "&") are two people saying the line together."""
    name, extension = split_character(dialog.character)
    parenthetical, text = _speech(dialog)
    names = [part.strip() for part in _TOGETHER.split(name) if part.strip()] or [name]
    return [SceneElement(kind=ElementKind.dialogue, character=speaker, extension=extension,
                         parenthetical=parenthetical, text=text, dual=dual or index > 0)
            for index, speaker in enumerate(names)]


def parse_fountain(text: str) -> tuple[dict[str, str], list[Scene]]:
    """Parse Fountain text (already decoded, BOM stripped) into its title page and scenes.

    Elements before the first heading that are picture or sound (a cold open: action, a voice-over,
    centred titles) become scene 1, "COLD OPEN"; a lone FADE IN: there belongs to no scene.
    """
    # Whitespace-only lines are blank lines in every editor, except Fountain's deliberate two spaces.
    text = _BLANKISH.sub("", text)
    screenplay = sp_fountain.parse(io.StringIO(text))
    title_page = {
        key.strip().lower(): _unemphasize(" ".join(values)).strip()
        for key, values in (screenplay.title_page or {}).items()
    }

    scenes: list[Scene] = []
    preamble: list[SceneElement] = []

    def add(element: SceneElement) -> None:
        (scenes[-1].elements if scenes else preamble).append(element)

    for paragraph in screenplay.paragraphs:
        if isinstance(paragraph, sp.Slug):
            heading = _plain(paragraph.line)
            interior, location, time_of_day = parse_heading(heading)
            forced = not interior
            scenes.append(
                Scene(
                    number=len(scenes) + 1,
                    heading=heading,
                    interior=interior,  # type: ignore[arg-type]
                    location=location,
                    time_of_day=time_of_day,
                    forced=forced,
                )
            )
        elif isinstance(paragraph, sp.Dialog):
            for element in _dialogue(paragraph, dual=False):
                add(element)
        elif isinstance(paragraph, sp.DualDialog):
            for element in _dialogue(paragraph.left, dual=False) + _dialogue(paragraph.right, dual=True):
                add(element)
        elif isinstance(paragraph, sp.Transition):
            add(SceneElement(kind=ElementKind.transition, text=_plain(paragraph.line)))
        elif isinstance(paragraph, sp.PageBreak):
            add(SceneElement(kind=ElementKind.page_break))
        elif isinstance(paragraph, sp.Action):
            text_block = " ".join(_plain(line) for line in paragraph.lines).strip()
            if not text_block:
                continue
            if paragraph.centered:
                add(SceneElement(kind=ElementKind.centered, text=text_block))
            elif text_block.startswith("~"):  # lyrics: sung, kept as words
                add(SceneElement(kind=ElementKind.action, text=f"Sung: {text_block.strip('~ ')}"))
            elif _LOOSE_TRANSITIONS.match(text_block):
                add(SceneElement(kind=ElementKind.transition, text=text_block))
            else:
                add(SceneElement(kind=ElementKind.action, text=text_block))
        # Sections (#) and synopses (=) are the writer's outline, not picture: skipped.

    if any(e.kind in (ElementKind.action, ElementKind.dialogue, ElementKind.centered) for e in preamble):
        # A cold open (action, a voice-over, titles before the first heading) is a scene of its own.
        heading = "COLD OPEN" if scenes else "UNTITLED SCENE"
        scenes = [Scene(number=1, heading=heading, forced=True, elements=preamble)] + [
            scene.model_copy(update={"number": scene.number + 1}) for scene in scenes]
    return title_page, scenes
