"""The rules planner: a deterministic shot list from the parsed script alone.

It is what runs when no language model is available, and it is predictable on
purpose: an establishing shot per scene heading, one shot per action paragraph,
coverage for each dialogue line, durations from word counts at a stated pace,
and framing and camera moves from cue words in the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nightshift.config import PacingSettings
from nightshift.schemas import CameraMove, ElementKind, Framing, Scene, SceneElement, ShotDraft, Transition

# Cue words, checked in order; the first match wins. Lowercase, whole words.
_FRAMING_CUES: tuple[tuple[str, Framing], ...] = (
    (r"high above|aerial|bird'?s[- ]eye|from above|overhead|\bdrone\b", Framing.aerial),
    (r"\bpov\b", Framing.pov),
    (r"\binsert\b", Framing.insert),
    (r"extreme close|\beyes?\b|\bfingers?\b|\blips\b", Framing.extreme_close),
    (r"close on|close-up|\bhands?\b|\bface\b|\bfist\b", Framing.close),
)
_CAMERA_CUES: tuple[tuple[str, CameraMove], ...] = (
    (r"\bdrone\b", CameraMove.drone),
    (r"handheld|shaky", CameraMove.handheld),
    (r"\bclimbs?\b|\brises?\b|looks? up|\bascends?\b", CameraMove.tilt_up),
    (r"\bfalls?\b|\bdrops?\b|looks? down|\bsinks?\b|\bbelow\b", CameraMove.tilt_down),
    (r"\bsweeps?\b|\bpans?\b|\bacross\b", CameraMove.pan_right),
    (r"threads?|\bruns?\b|\brides?\b|\bfollows?\b|\bchases?\b|\bslides?\b|\bcrosses\b|\bthrough\b", CameraMove.tracking),
    (r"close in|\bapproach|\bnears?\b|grows? in", CameraMove.push_in),
    (r"\breveal|pulls? back|\bwaking city\b|\blooks out\b", CameraMove.pull_out),
    (r"\bspins?\b|\bcircles?\b", CameraMove.orbit),
)
_LENS_CUES = re.compile(r"\b(\d{2,3}\s?mm|low angle|high angle|dutch angle|wide lens|telephoto|fisheye|macro)\b", re.I)
_SOUND_CUES: tuple[tuple[str, str], ...] = (
    (r"\brain\b", "rain"),
    (r"\bstorm\b|\bthunder\b", "storm"),
    (r"\bwind\b|\bgale\b", "wind"),
    (r"\bsea\b|\bwaves?\b|\bsurf\b", "waves"),
    (r"\bcrowd\b|\bmarket\b", "crowd murmur"),
    (r"\btrain\b", "train on the rails"),
    (r"\bsteam\b|\bbroth\b|\bnoodle", "sizzling and bubbling"),
    (r"\bsnow\b", "muffled snowy quiet"),
    (r"\bcity\b|\bstreet\b|\btraffic\b", "distant city"),
)
_TRANSITIONS: tuple[tuple[str, Transition], ...] = (
    (r"fade (out|to black)|cut to black", Transition.fade_out),
    (r"dissolve|match cut|crossfade", Transition.crossfade),
)
_PRONOUN = re.compile(r"\b(she|he|her|his|him)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r",\s+(?=(?:until|and then|then|as|while|before|after|past|where|when)\b)")


def _first_match(text: str, cues: tuple[tuple[str, object], ...], default: object) -> object:
    lowered = text.lower()
    return next((value for pattern, value in cues if re.search(pattern, lowered)), default)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def scene_setting(scene: Scene) -> str:
    """'EXT. ROCKY HEADLAND - DUSK' -> 'exterior, rocky headland, at dusk'."""
    parts = []
    if scene.interior:
        parts.append({"INT": "interior", "EXT": "exterior", "INT/EXT": "interior and exterior"}[scene.interior])
    if scene.location:
        parts.append(scene.location.lower())
    time_of_day = scene.time_of_day.lower()
    if time_of_day and time_of_day not in ("continuous", "later", "moments later", "same"):
        parts.append(f"at {time_of_day}")
    return ", ".join(parts)


def clean_action(text: str, names: list[str]) -> str:
    """Screenplay typography out, plain prose in: 'JUN (20s, courier) rides' -> 'Jun rides'."""
    for name in names:
        text = re.sub(rf"(?<![\w]){re.escape(name)}(?![\w])(\s*\([^)]*\))?", name.title(), text)
    return text


def characters_in(text: str, names: list[str]) -> list[str]:
    """Script characters a passage mentions: by full name, or by one capitalised part of it ('Wei')."""
    found = []
    for name in names:
        if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text, re.IGNORECASE):
            found.append(name)
            continue
        for part in re.findall(r"[A-Za-z]{3,}", name):
            if re.search(rf"(?<![\w])({re.escape(part.title())}|{re.escape(part.upper())})(?![\w])", text):
                found.append(name)
                break
    return found


@dataclass(frozen=True)
class RulesPlanner:
    """Deterministic shot planning. Same scene in, same shots out."""

    pacing: PacingSettings

    def _seconds(self, words: int, words_per_minute: float, floor: float | None = None) -> float:
        seconds = words * 60.0 / words_per_minute
        lower = max(self.pacing.min_shot_s, floor or 0.0)
        return round(min(max(seconds, lower), self.pacing.max_shot_s), 1)

    def beats(self, text: str) -> list[str]:
        """Split an action paragraph into beats that each fit one shot (sentences, then clauses)."""
        limit_words = self.pacing.max_shot_s * self.pacing.action_words_per_minute / 60.0
        pieces: list[str] = []
        for sentence in sentences(text):
            if len(sentence.split()) > limit_words:
                clauses = _CLAUSE.split(sentence)
                pieces += [c.strip().rstrip(",") for c in clauses if c.strip()]
            else:
                pieces.append(sentence)
        beats: list[str] = []
        for piece in pieces:
            if beats and len((beats[-1] + " " + piece).split()) <= limit_words:
                beats[-1] = f"{beats[-1]} {piece}"
            else:
                beats.append(piece)
        return beats or [text]

    def _sound(self, text: str) -> str:
        lowered = text.lower()
        return ", ".join(dict.fromkeys(label for pattern, label in _SOUND_CUES if re.search(pattern, lowered)))

    def _establishing(self, scene: Scene, setting: str, description: str | None, ambience: str) -> ShotDraft:
        heading_cues = f"{scene.heading} {description or ''}"
        framing = _first_match(heading_cues, _FRAMING_CUES[:2], Framing.wide)
        camera = _first_match(scene.heading, _CAMERA_CUES[:1], None) or (
            CameraMove.drone if framing is Framing.aerial else CameraMove.push_in if scene.interior == "INT" else CameraMove.pan_right
        )
        place = setting or scene.heading.lower()
        text = description or f"Establishing view of {place}."
        parts = sentences(text)
        words = len(text.split())
        return ShotDraft(
            framing=framing,  # type: ignore[arg-type]
            camera_move=camera,  # type: ignore[arg-type]
            lens=(m.group(1) if (m := _LENS_CUES.search(heading_cues)) else None),
            characters=[],
            action=text,
            first_frame=parts[0] if parts else text,
            last_frame=parts[-1] if parts else text,
            motion=f"establishing {place}",
            sound=ambience,
            duration_s=self._seconds(words, self.pacing.action_words_per_minute, self.pacing.establishing_s),
        )

    def _action_shot(self, text: str, names: list[str], present: list[str], ambience: str) -> ShotDraft:
        in_frame = characters_in(text, names)
        if not in_frame and present and _PRONOUN.search(text):
            in_frame = [present[-1]]  # "She stops..." continues with whoever was last in frame
        text = clean_action(text, names)
        text = text[:1].upper() + text[1:]
        default_framing = Framing.wide if not in_frame else Framing.two_shot if len(in_frame) > 1 else Framing.medium
        framing = _first_match(text, _FRAMING_CUES, default_framing)
        parts = sentences(text)
        return ShotDraft(
            framing=framing,  # type: ignore[arg-type]
            camera_move=_first_match(text, _CAMERA_CUES, CameraMove.static),  # type: ignore[arg-type]
            lens=(m.group(1) if (m := _LENS_CUES.search(text)) else None),
            characters=in_frame,
            action=text,
            first_frame=parts[0],
            last_frame=parts[-1],
            motion=" ".join(parts[1:-1]) if len(parts) > 2 else "",
            sound=self._sound(text) or ambience,
            duration_s=self._seconds(len(text.split()), self.pacing.action_words_per_minute),
        )

    def _dialogue_shot(self, lines: list[SceneElement], present: list[str], previous_speaker: str | None,
                       ambience: str) -> ShotDraft:
        speakers = [line.character or "" for line in lines]
        offscreen = all((line.extension or "").upper().replace(" ", "") in ("V.O.", "O.S.", "O.C.") for line in lines)
        spoken = " ".join(f"{line.character}: {line.text}" for line in lines)
        words = sum(len(line.text.split()) for line in lines)
        manner = "; ".join(line.parenthetical.strip("() ") for line in lines if line.parenthetical)
        if offscreen:
            # A voice from elsewhere plays over the people who are here to hear it.
            in_frame = [name for name in present if name not in speakers]
            framing = Framing.medium if in_frame else Framing.wide
            subject = " and ".join(n.title() for n in in_frame) if in_frame else "the scene"
            action = f"{subject} as {' and '.join(s.title() for s in speakers)} is heard ({lines[0].extension})"
        elif len(lines) > 1:
            in_frame, framing = speakers, Framing.two_shot
            action = f"{' and '.join(s.title() for s in speakers)} speak at the same time"
        else:
            in_frame = speakers
            over_shoulder = previous_speaker and previous_speaker != speakers[0] and previous_speaker in present
            framing = Framing.over_the_shoulder if over_shoulder else Framing.medium_close
            action = f"{speakers[0].title()} speaks" + (f", {manner}" if manner else "")
        return ShotDraft(
            framing=framing,
            camera_move=CameraMove.static,
            characters=in_frame,
            action=action,
            first_frame=f"{action}, about to speak" if not offscreen else action,
            last_frame=f"{action}, the line finished" if not offscreen else action,
            motion=f"subtle natural movement while speaking{', ' + manner if manner else ''}",
            dialogue=spoken,
            sound=ambience,
            duration_s=self._seconds(words, self.pacing.dialogue_words_per_minute) if words else self.pacing.min_shot_s,
        )

    def plan_scene(self, scene: Scene, character_names: list[str]) -> list[ShotDraft]:
        setting = scene_setting(scene)
        ambience = self._sound(f"{scene.heading} {' '.join(e.text for e in scene.elements)}")
        elements = [e for e in scene.elements if e.kind is not ElementKind.page_break]
        first_action = next((e for e in elements if e.kind is not ElementKind.transition), None)
        description = None
        if first_action is not None and first_action.kind is ElementKind.action and not characters_in(first_action.text, character_names):
            description, *rest = self.beats(first_action.text)
            position = elements.index(first_action)
            elements[position : position + 1] = [first_action.model_copy(update={"text": t}) for t in rest]
        shots = [self._establishing(scene, setting, description, ambience)]

        present: list[str] = []
        previous_speaker: str | None = None
        index = 0
        while index < len(elements):
            element = elements[index]
            if element.kind is ElementKind.action:
                for beat in self.beats(element.text):
                    shot = self._action_shot(beat, character_names, present, ambience)
                    present[:] = [n for n in present if n not in shot.characters] + shot.characters
                    shots.append(shot)
            elif element.kind is ElementKind.dialogue:
                group = [element]
                if index + 1 < len(elements) and elements[index + 1].dual:
                    group.append(elements[index + 1])
                    index += 1
                shot = self._dialogue_shot(group, present, previous_speaker, ambience)
                present[:] = [n for n in present if n not in shot.characters] + shot.characters
                previous_speaker = group[-1].character
                shots.append(shot)
            elif element.kind is ElementKind.transition:
                transition = _first_match(element.text, _TRANSITIONS, Transition.cut)
                shots[-1] = shots[-1].model_copy(update={"transition": transition})
            # Centered text (titles, THE END) is typography, not a shot.
            index += 1
        return shots
