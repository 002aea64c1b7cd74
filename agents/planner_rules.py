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
# Weather and places that are heard wherever they are (ambience), as nouns: "waves goodbye" is no sea.
_SOUND_CUES: tuple[tuple[str, str], ...] = (
    (r"\brain (falls|lashes|drums|hammers|beats|pours)|\bthe rain\b|\bin the rain\b|\brainstorm\b", "rain"),
    (r"\bstorm\b|\bthunder\b", "storm"),
    (r"\bthe wind\b|\bwind (howls|moans|drags|tears|rises)|\bgale\b", "wind"),
    (r"\bthe sea\b|\bthe surf\b|\bsurf\b|\bthe waves\b|\bwaves (crash|break|pound|roll)", "waves"),
    (r"\bcrowd\b|\bmarket\b", "crowd murmur"),
    (r"\btrain (rattles|roars|pulls|screeches)|\bon the train\b|\bthe train\b", "train on the rails"),
    (r"\bsizzl|\bbubbl", "sizzling and bubbling"),
    (r"\btraffic\b", "distant traffic"),
)
# What the script says is heard: "we hear ...", "the sound of ...", "SFX: ...", a sound word as a subject.
_HEARD = re.compile(r"\b(?:we hear|hears?|heard|the sound of|sound of|sfx:?|the noise of)\s+(?:a |an |the )?(?P<what>[^.,;!?]+)",
                    re.IGNORECASE)
_SOUND_WORDS = re.compile(r"\b(foghorn|siren|alarm|bell|bells|gunshot|gunshots|explosion|thunderclap|scream|"
                          r"knock|knocking|whistle|engine|horn|music|applause|laughter|barking|ringtone)s?\b",
                          re.IGNORECASE)
_TRANSITIONS: tuple[tuple[str, Transition], ...] = (
    (r"fade (out|to black)|cut to black", Transition.fade_out),
    (r"dissolve|match cut|crossfade", Transition.crossfade),
)
_PRONOUN = re.compile(r"\b(she|he|her|his|him)\b", re.IGNORECASE)
_HE = re.compile(r"\b(he|him|his|himself)\b", re.IGNORECASE)
_SHE = re.compile(r"\b(she|her|hers|herself)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r",\s+(?=(?:until|and then|then|as|while|before|after|past|where|when)\b)")


_OFFSCREEN = {"V.O.", "VO", "O.S.", "OS", "O.C.", "OC", "OFF", "OFF SCREEN", "OFFSCREEN", "V.O", "O.S", "O.C"}


def _offscreen(extension: str | None) -> bool:
    """V.O., O.S. or O.C. among a cue's extensions, however they are combined: "(V.O.) (CONT'D)", "(V.O.)(CONT'D)"."""
    tokens = re.split(r"[\s()/,]+", (extension or "").upper())
    return any(token.strip() in _OFFSCREEN for token in tokens)


def _first_match(text: str, cues: tuple[tuple[str, object], ...], default: object) -> object:
    lowered = text.lower()
    return next((value for pattern, value in cues if re.search(pattern, lowered)), default)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


_WHEN = {"day": "by day", "daytime": "by day", "morning": "in the morning", "afternoon": "in the afternoon",
         "evening": "in the evening", "night": "at night", "dawn": "at dawn", "dusk": "at dusk",
         "sunset": "at sunset", "sunrise": "at sunrise", "noon": "at noon", "midnight": "at midnight"}


def scene_setting(scene: Scene) -> str:
    """'EXT. ROCKY HEADLAND - DUSK' -> 'exterior, rocky headland, at dusk'."""
    parts = []
    if scene.interior:
        parts.append({"INT": "interior", "EXT": "exterior", "INT/EXT": "interior and exterior"}[scene.interior])
    if scene.location:
        parts.append(scene.location.lower())
    time_of_day = scene.time_of_day.lower()
    if time_of_day and time_of_day not in ("continuous", "later", "moments later", "same"):
        parts.append(_WHEN.get(time_of_day, f"at {time_of_day}"))
    return ", ".join(parts)


# Words that qualify a name rather than being one: YOUNG EDWARD and ADULT EDWARD are not "Young" or "Adult".
_NOT_NAMES = {"young", "old", "older", "adult", "little", "big", "mr", "mrs", "ms", "dr", "the", "man", "woman",
              "boy", "girl", "kid", "officer", "sergeant", "captain", "agent", "uncle", "aunt", "mother", "father"}
_CAPS_RUN = re.compile(r"(?<![\w'])[A-Z][A-Z'\-]*[A-Z](?:\s+[A-Z][A-Z'\-]*[A-Z])*(?![\w'])")


def name_case(name: str) -> str:
    """A cue as prose: 'WILL'S DATE' -> "Will's Date", 'JEAN-LUC' -> 'Jean-Luc', "O'BRIEN" -> "O'Brien"."""
    def word(match: re.Match[str]) -> str:
        head, _, tail = match.group(0).partition("'")
        cased = head[:1].upper() + head[1:].lower()
        if cased.startswith("Mc") and len(cased) > 2:
            cased = "Mc" + cased[2:].capitalize()
        if not _:
            return cased
        return f"{cased}'{tail.lower() if len(tail) <= 2 else tail[:1].upper() + tail[1:].lower()}"
    return re.sub(r"[A-Za-z]+(?:'[A-Za-z]+)?", word, name)


def clean_action(text: str, names: list[str]) -> str:
    """Screenplay typography out, plain prose in: 'BRICK BRADDOCK (40s), broad' -> 'Brick Braddock, broad'.
    Capitals that name someone (the whole run: a surname too) become the name; the rest keeps the script's
    own casing ("The door SLAMS" is the writer's emphasis)."""
    def run(match: re.Match[str]) -> str:
        words = match.group(0)
        if any(re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", words) for name in names):
            return name_case(words)
        return words

    for name in names:  # an introduction's age or description in brackets goes with the capitals
        text = re.sub(rf"(?<![\w])({re.escape(name)}(?:\s+[A-Z][A-Z'\-]+)*)\s*\([^)]*\)", r"\1", text)
    return _CAPS_RUN.sub(run, text)


def _name_parts(names: list[str]) -> dict[str, str]:
    """Parts of names that stand for one character alone ('Wei' for WEI CHEN), never a shared or qualifying word."""
    owners: dict[str, set[str]] = {}
    for name in names:
        for part in re.findall(r"[A-Za-z]{3,}", name):
            owners.setdefault(part.lower(), set()).add(name)
    return {part: next(iter(who)) for part, who in owners.items() if len(who) == 1 and part not in _NOT_NAMES}


def characters_in(text: str, names: list[str]) -> list[str]:
    """Script characters a passage mentions: by whole name, or by a capitalised part that is theirs alone.
    A name inside a longer one (EDWARD in YOUNG EDWARD) or a qualifier (YOUNG) is not a mention."""
    found, parts = [], _name_parts(names)
    longest_first = sorted(names, key=len, reverse=True)
    remaining = text
    for name in longest_first:
        pattern = rf"(?<![\w]){re.escape(name)}(?![\w])"
        if re.search(pattern, remaining, re.IGNORECASE):
            found.append(name)
            remaining = re.sub(pattern, " ", remaining, flags=re.IGNORECASE)  # YOUNG EDWARD is not also EDWARD
    for part, name in parts.items():
        if name not in found and re.search(rf"(?<![\w])({re.escape(part.title())}|{re.escape(part.upper())})(?![\w])",
                                           remaining):
            found.append(name)
    return sorted(found, key=names.index)


def _pronoun(text: str) -> str | None:
    he, she = len(_HE.findall(text)), len(_SHE.findall(text))
    return None if he == she else "he" if he > she else "she"


def pronouns_of(scenes: list[Scene], names: list[str]) -> dict[str, str]:
    """'he' or 'she' for each character the action refers to so: the pronoun of sentences naming them alone."""
    votes: dict[str, list[str]] = {}
    for scene in scenes:
        for element in scene.elements:
            if element.kind is not ElementKind.action:
                continue
            last: str | None = None  # "STEEL ducks in. She kicks it shut.": the next sentence's pronoun is hers
            for sentence in sentences(element.text):
                mentioned = characters_in(sentence, names)
                subject = mentioned[0] if len(mentioned) == 1 else last if not mentioned else None
                if subject is not None and (pronoun := _pronoun(sentence)) is not None:
                    votes.setdefault(subject, []).append(pronoun)
                last = mentioned[0] if len(mentioned) == 1 else (last if not mentioned else None)
    return {name: max(set(found), key=found.count) for name, found in votes.items()}


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
        """What the text says is heard: its ambience (weather, a crowd) and what it names as heard or a sound."""
        lowered = text.lower()
        heard = [label for pattern, label in _SOUND_CUES if re.search(pattern, lowered)]
        for match in _HEARD.finditer(text):  # "we hear a foghorn somewhere out ..." -> "foghorn"
            named = _SOUND_WORDS.search(match.group("what"))
            heard.append(named.group(1).lower() if named else " ".join(match.group("what").split()[:3]).lower())
        heard += [m.group(1).lower() for m in _SOUND_WORDS.finditer(text)]
        return ", ".join(dict.fromkeys(h for h in heard if h))

    def _establishing(self, scene: Scene, setting: str, description: str | None, ambience: str,
                      names: list[str]) -> ShotDraft:
        heading_cues = f"{scene.heading} {description or ''}"
        framing = _first_match(heading_cues, _FRAMING_CUES[:2], Framing.wide)
        camera = _first_match(scene.heading, _CAMERA_CUES[:1], None) or (
            CameraMove.drone if framing is Framing.aerial else CameraMove.push_in if scene.interior == "INT" else CameraMove.pan_right
        )
        place = setting or scene.heading.lower()
        text = clean_action(description, names) if description else f"Establishing view of {place}."
        text = text[:1].upper() + text[1:]
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

    def _action_shot(self, text: str, names: list[str], present: list[str], ambience: str,
                     pronouns: dict[str, str]) -> ShotDraft:
        in_frame = characters_in(text, names)
        if not in_frame and present and _PRONOUN.search(text):
            # "She laughs" continues with the last one in frame the script calls "she", else whoever was last.
            pronoun = _pronoun(text)
            in_frame = [next((n for n in reversed(present) if pronouns.get(n) == pronoun), present[-1])]
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

    def _dialogue_shots(self, lines: list[SceneElement], present: list[str], previous_speaker: str | None,
                        ambience: str) -> list[ShotDraft]:
        """Coverage for one speech (or lines spoken together). A voice from off screen (V.O., O.S., O.C., with
        or without CONT'D) plays over whoever is here; a long speech is split at sentences into a single,
        the listener's reverse and an over-the-shoulder in turn, timed at speaking pace."""
        speakers = [line.character or "" for line in lines]
        offscreen = all(_offscreen(line.extension) for line in lines)
        manner = "; ".join(line.parenthetical.strip("() ") for line in lines if line.parenthetical)
        listeners = [name for name in present if name not in speakers]
        words_per_shot = max(1.0, self.pacing.max_shot_s * self.pacing.dialogue_words_per_minute / 60.0)
        chunks = [lines[0].text] if len(lines) > 1 or not lines[0].text else self._speech_chunks(lines[0].text,
                                                                                                  words_per_shot)
        shots = []
        for number, chunk in enumerate(chunks):
            spoken = " ".join(f"{line.character}: {chunk if len(lines) == 1 else line.text}" for line in lines)
            words = len(chunk.split()) if len(lines) == 1 else max(len(line.text.split()) for line in lines)
            who = " and ".join(name_case(s) for s in speakers)
            if offscreen:
                in_frame = listeners
                framing = Framing.medium if in_frame else Framing.wide
                subject = " and ".join(name_case(n) for n in in_frame) if in_frame else "The scene"
                action = f"{subject}, as {who} is heard off screen ({lines[0].extension})"
            elif len(lines) > 1:
                in_frame, framing = speakers, Framing.two_shot
                action = f"{who} speak at the same time"
            elif number % 3 == 1 and listeners:  # the reverse: the one listening
                in_frame, framing = [listeners[-1]], Framing.medium_close
                action = f"{name_case(listeners[-1])} listens as {who} goes on"
            elif number % 3 == 2 and listeners:
                in_frame, framing = [speakers[0], listeners[-1]], Framing.over_the_shoulder
                action = f"{who} over {name_case(listeners[-1])}'s shoulder, still speaking"
            else:
                in_frame = speakers
                over_shoulder = number == 0 and previous_speaker and previous_speaker != speakers[0] \
                    and previous_speaker in present
                framing = Framing.over_the_shoulder if over_shoulder else Framing.medium_close
                action = f"{who} speaks" + (f", {manner}" if manner and number == 0 else "")
            seconds = words * 60.0 / self.pacing.dialogue_words_per_minute
            shots.append(ShotDraft(
                framing=framing,
                camera_move=CameraMove.static,
                characters=in_frame,
                action=action,
                first_frame=f"{action}, about to speak" if not offscreen and number == 0 else action,
                last_frame=f"{action}, the line finished" if not offscreen and number == len(chunks) - 1 else action,
                motion=f"subtle natural movement while speaking{', ' + manner if manner else ''}",
                dialogue=spoken,
                sound=ambience,
                # Speech is never cut short: a shot lasts as long as its words take to say.
                duration_s=round(max(seconds, self.pacing.min_shot_s), 1) if words else self.pacing.min_shot_s,
            ))
        return shots

    @staticmethod
    def _speech_chunks(text: str, words_per_shot: float) -> list[str]:
        chunks: list[str] = []
        for sentence in sentences(text):
            if chunks and len((chunks[-1] + " " + sentence).split()) <= words_per_shot:
                chunks[-1] = f"{chunks[-1]} {sentence}"
            else:
                chunks.append(sentence)
        return chunks or [text]

    def _title_card(self, text: str) -> ShotDraft:
        """Centred text (opening titles, THE END) as a card on screen."""
        return ShotDraft(framing=Framing.insert, camera_move=CameraMove.static, characters=[],
                         action=f"Title card: {text}", first_frame=f"Title card reading \"{text}\"",
                         last_frame=f"Title card reading \"{text}\"", motion="", sound="",
                         duration_s=self._seconds(len(text.split()), self.pacing.action_words_per_minute, 3.0))

    def plan_scene(self, scene: Scene, character_names: list[str],
                   pronouns: dict[str, str] | None = None) -> list[ShotDraft]:
        setting = scene_setting(scene)
        # The scene's ambience: what its heading and action say is heard (never what someone says), this scene only.
        ambience = self._sound(f"{scene.heading} {' '.join(e.text for e in scene.elements if e.kind is ElementKind.action)}")
        elements = [e for e in scene.elements if e.kind is not ElementKind.page_break]
        first_action = next((e for e in elements if e.kind is not ElementKind.transition), None)
        description = None
        if first_action is not None and first_action.kind is ElementKind.action and not characters_in(first_action.text, character_names):
            description, *rest = self.beats(first_action.text)
            position = elements.index(first_action)
            elements[position : position + 1] = [first_action.model_copy(update={"text": t}) for t in rest]
        shots = [self._establishing(scene, setting, description, ambience, character_names)]

        present: list[str] = []
        previous_speaker: str | None = None
        index = 0
        while index < len(elements):
            element = elements[index]
            if element.kind is ElementKind.action:
                previous_beat = None
                for beat in self.beats(element.text):
                    shot = self._action_shot(beat, character_names, present, ambience, pronouns or {})
                    # One paragraph of action split over cuts: the same people carry on, so the next beat starts
                    # where the last one ended (continuity).
                    if previous_beat is not None and shot.characters and shot.characters == previous_beat.characters:
                        shot = shot.model_copy(update={"continues": True})
                    present[:] = [n for n in present if n not in shot.characters] + shot.characters
                    shots.append(shot)
                    previous_beat = shot
            elif element.kind is ElementKind.dialogue:
                group = [element]
                while index + 1 < len(elements) and elements[index + 1].dual:
                    group.append(elements[index + 1])
                    index += 1
                for shot in self._dialogue_shots(group, present, previous_speaker, ambience):
                    present[:] = [n for n in present if n not in shot.characters] + shot.characters
                    shots.append(shot)
                if not all(_offscreen(line.extension) for line in group):
                    present[:] = [n for n in present if n not in (g.character for g in group)] + [
                        g.character for g in group if g.character]
                previous_speaker = group[-1].character
            elif element.kind is ElementKind.centered:
                shots.append(self._title_card(element.text))
            elif element.kind is ElementKind.transition:
                transition = _first_match(element.text, _TRANSITIONS, Transition.cut)
                shots[-1] = shots[-1].model_copy(update={"transition": transition})
            index += 1
        return shots
