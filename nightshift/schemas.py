"""The data that flows through Nightshift, as pydantic v2 models.

script -> Script -> ShotList -> RenderPlan (RenderSpecs). Every stage is plain,
JSON-serialisable data so a user can read it, edit it and re-run from it.
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = "1.0"
SHOT_ID_PATTERN = r"^s\d{2,6}-sh\d{2,6}$"
TITLE_MAX = 200  # titles, script names and character names: long enough for any real one, short enough for a file name
NAME_MAX = 255

# The tables every layer uses: one list each.
ModelFamily = Literal["ltx", "ltx2", "wan", "hunyuan"]
MemoryTier = Literal["resident", "resident_tiled", "group_offload", "model_offload", "sequential_offload"]
QuantizationMode = Literal["none", "fp8", "int8", "nf4", "gguf"]
Rung = Literal["animatic", "draft", "final"]  # the quality ladder, cheapest first (nightshift/ladder.py)
FAMILY_NAMES: tuple[str, ...] = get_args(ModelFamily)
MEMORY_TIERS: tuple[str, ...] = get_args(MemoryTier)
QUANTIZATION_MODES: tuple[str, ...] = get_args(QuantizationMode)


class _Model(BaseModel):
    # Unknown keys in a hand-edited file are mistakes (a typo in a field name), not data.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- script


class ElementKind(str, Enum):
    action = "action"
    dialogue = "dialogue"
    transition = "transition"
    centered = "centered"
    page_break = "page_break"


class SceneElement(_Model):
    """One element of a scene, in script order."""

    kind: ElementKind
    text: str = ""
    character: str | None = Field(None, description="Speaker, for dialogue (name without extension).")
    extension: str | None = Field(None, description="V.O., O.S., CONT'D ... for dialogue.")
    parenthetical: str | None = None
    dual: bool = Field(False, description="True when this dialogue is spoken at the same time as the previous one.")


class Scene(_Model):
    number: int = Field(ge=1)
    heading: str
    interior: Literal["INT", "EXT", "INT/EXT", ""] = ""
    location: str = ""
    time_of_day: str = ""
    forced: bool = Field(False, description="Heading forced with a leading '.' in Fountain.")
    elements: list[SceneElement] = Field(default_factory=list)

    @property
    def characters(self) -> list[str]:
        seen: dict[str, None] = {}
        for element in self.elements:
            if element.character:
                seen.setdefault(element.character, None)
        return list(seen)

    def text(self) -> str:
        """The scene as plain text, the exact input a planner sees."""
        lines = [self.heading]
        for element in self.elements:
            if element.kind is ElementKind.dialogue:
                speaker = element.character or ""
                if element.extension:
                    speaker += f" ({element.extension})"
                if element.dual:
                    speaker += " (at the same time)"
                if element.parenthetical:
                    speaker += f" {element.parenthetical}"
                lines.append(f"{speaker}: {element.text}")
            elif element.kind is ElementKind.centered:
                lines.append(f"TITLE CARD: {element.text}")
            elif element.kind is not ElementKind.page_break:
                lines.append(element.text)
        return "\n".join(line for line in lines if line)


class Character(_Model):
    name: str = Field(max_length=TITLE_MAX)
    introduction: str = Field("", description="The words the script uses when the character first appears.")
    dialogue_lines: int = 0


class Script(_Model):
    source_name: str = Field(max_length=NAME_MAX, description="File name the script came from.")
    format: Literal["fountain", "markdown", "prose"]
    title: str = Field(max_length=TITLE_MAX)
    title_page: dict[str, str] = Field(default_factory=dict)
    scenes: list[Scene]
    characters: list[Character] = Field(default_factory=list)


# --------------------------------------------------------------------------- shots


class Framing(str, Enum):
    extreme_wide = "extreme wide"
    wide = "wide"
    full = "full"
    medium_wide = "medium wide"
    medium = "medium"
    medium_close = "medium close-up"
    close = "close-up"
    extreme_close = "extreme close-up"
    two_shot = "two-shot"
    over_the_shoulder = "over-the-shoulder"
    pov = "point of view"
    insert = "insert"
    aerial = "aerial"


class CameraMove(str, Enum):
    static = "static"
    pan_left = "pan left"
    pan_right = "pan right"
    tilt_up = "tilt up"
    tilt_down = "tilt down"
    push_in = "push in"
    pull_out = "pull out"
    dolly = "dolly"
    tracking = "tracking"
    crane_up = "crane up"
    crane_down = "crane down"
    handheld = "handheld"
    orbit = "orbit"
    drone = "drone"


class Transition(str, Enum):
    cut = "cut"
    crossfade = "crossfade"
    fade_out = "fade out"
    fade_in = "fade in"


ShotId = Annotated[str, Field(pattern=SHOT_ID_PATTERN, max_length=16, description="Like s03-sh02: scene 3, shot 2.")]


class ShotDraft(_Model):
    """The part of a shot a planner writes; ids and scene numbers are assigned by Nightshift."""

    framing: Framing
    camera_move: CameraMove = CameraMove.static
    lens: str | None = Field(None, description="Lens or angle where the script gives one (e.g. '24mm', 'low angle').")
    characters: list[str] = Field(default_factory=list, description="Characters in frame, by script name.")
    action: str = Field(min_length=1, description="What happens in the shot.")
    first_frame: str = Field(min_length=1, description="What the first frame shows.")
    last_frame: str = Field(min_length=1, description="What the last frame shows.")
    motion: str = Field("", description="How subjects and camera move between the two frames.")
    dialogue: str = Field("", description="Spoken words heard in the shot, 'NAME: line'.")
    sound: str = Field("", description="Ambient sound and effects.")
    duration_s: float = Field(gt=0, le=60, description="Seconds on screen.")
    transition: Transition = Field(Transition.cut, description="How this shot leaves for the next.")
    continues: bool = Field(False, description="The action carries on from the previous shot of the scene: this shot "
                                               "starts on the last frame that shot rendered.")

    @field_validator("action", "first_frame", "last_frame")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class SceneShotPlan(_Model):
    """What a language model returns for one scene (the `format=` schema sent to Ollama)."""

    shots: list[ShotDraft] = Field(min_length=1)


class Shot(ShotDraft):
    id: ShotId
    scene: int = Field(ge=1)
    first_frame_image: str | None = Field(
        None, description="A user-supplied first keyframe (path relative to the shot list), e.g. a Blender render."
    )
    last_frame_image: str | None = Field(None, description="A user-supplied last keyframe image.")
    planned_by: str = Field("", description="Planner that wrote this shot (rules, ollama:<model>, or edited).")
    prompt: str | None = Field(None, max_length=4000,
                               description="Your own words for the video prompt; replaces the one Nightshift writes.")
    take: int = Field(1, ge=1, le=999, description="Which take: a redo from the review renders the next one, "
                                                   "with a seed of its own.")

    @field_validator("first_frame_image", "last_frame_image")
    @classmethod
    def _relative_image(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        path = Path(value)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"keyframe image {value!r} must be a path inside the shot list's folder")
        return value


class SceneSummary(_Model):
    """Where a scene happens, kept in the shot list so render plans can be rebuilt from it alone."""

    number: int = Field(ge=1)
    heading: str
    setting: str = Field("", description="Place and time in words, used in every prompt of the scene.")


class PlannerInfo(_Model):
    kind: Literal["rules", "ollama"]
    model: str | None = None
    model_digest: str | None = None
    templates: dict[str, str] = Field(default_factory=dict, description="Planner prompt template name -> sha256.")
    options: dict[str, float | int | str] = Field(default_factory=dict)
    exchanges: list[str] = Field(
        default_factory=list, description="Cache keys of the stored model exchanges (exact prompts and answers)."
    )
    pace_words_per_minute: float | None = None
    notes: list[str] = Field(default_factory=list, description="Why this planner ran, fallbacks, repairs.")


def _safetensors_path(value: str) -> str:
    """A LoRA is only ever read from a .safetensors file (no pickled code)."""
    if not value.endswith(".safetensors"):
        raise ValueError(f"LoRA {value!r} must be a .safetensors file")
    return value


class CharacterLoRA(_Model):
    """A LoRA that holds one character's look: a local .safetensors, the word that calls it up, how strongly."""

    path: str = Field(description="A local .safetensors (relative to the shot list's folder, or absolute).")
    trigger: str = Field("", max_length=200, description="Added to the prompt of every shot the character is in.")
    weight: float = Field(1.0, ge=-4, le=4)

    @field_validator("path")
    @classmethod
    def _safetensors(cls, value: str) -> str:
        return _safetensors_path(value)


class CharacterLook(_Model):
    """How a character looks, beyond words: reference images and an optional LoRA."""

    images: list[str] = Field(default_factory=list, max_length=8,
                              description="Reference images, paths relative to the shot list's folder.")
    lora: CharacterLoRA | None = None

    @field_validator("images")
    @classmethod
    def _inside(cls, value: list[str]) -> list[str]:
        for image in value:
            if Path(image).is_absolute() or ".." in Path(image).parts:
                raise ValueError(f"reference image {image!r} must be a path inside the shot list's folder")
        return value


class ShotList(_Model):
    schema_version: str = SCHEMA_VERSION
    title: str = Field(max_length=TITLE_MAX)
    source_name: str = Field(max_length=NAME_MAX)
    source_sha256: str
    planner: PlannerInfo
    style_bible: str = Field("", description="Look of the whole film, added to every prompt.")
    character_bible: dict[str, str] = Field(
        default_factory=dict, description="Character name -> fixed visual description, used in every shot."
    )
    character_looks: dict[str, CharacterLook] = Field(
        default_factory=dict, description="Character name -> reference images and LoRA, used in every shot they are in.")
    scenes: list[SceneSummary] = Field(default_factory=list)
    shots: list[Shot]
    warnings: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> ShotList:
        seen: set[str] = set()
        for shot in self.shots:
            if shot.id in seen:
                raise ValueError(f"shot id {shot.id} appears twice")
            seen.add(shot.id)
        return self

    @property
    def total_seconds(self) -> float:
        return sum(shot.duration_s for shot in self.shots)


# --------------------------------------------------------------------------- render specs



class KeyframeSpec(_Model):
    """A first or last frame: either a user's image or a prompt for a text-to-image model."""

    frame_index: int = Field(ge=0)
    prompt: str | None = None
    image_path: str | None = None
    from_shot: ShotId | None = Field(None, description="Continuity: the last rendered frame of this shot (the one before).")

    @model_validator(mode="after")
    def _one_source(self) -> KeyframeSpec:
        if not self.prompt and not self.image_path and not self.from_shot:
            raise ValueError("a keyframe needs a prompt or an image_path")
        return self


class LoraSpec(_Model):
    name: str = Field(pattern=r"^[a-z0-9_]{1,64}$", description="Adapter name: the character's, made safe.")
    path: str
    weight: float = Field(1.0, ge=-4, le=4)

    @field_validator("path")
    @classmethod
    def _safetensors(cls, value: str) -> str:
        return _safetensors_path(value)


class RenderSpec(_Model):
    shot_id: ShotId
    family: ModelFamily
    model_id: str
    prompt: str = Field(min_length=1)
    negative_prompt: str = ""
    keyframes: list[KeyframeSpec] = Field(default_factory=list)
    seed: int = Field(ge=0, lt=2**32)
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)
    fps: float = Field(gt=0, le=120)
    num_frames: int = Field(gt=0)
    steps: int = Field(gt=0, le=500)
    guidance: float = Field(ge=0, le=50)
    duration_s: float = Field(gt=0, description="Requested duration; num_frames / fps may differ by frame-count rules.")
    transition: Transition = Transition.cut
    notes: list[str] = Field(default_factory=list)
    references: list[str] = Field(default_factory=list, description="Reference images of the characters in frame.")
    loras: list[LoraSpec] = Field(default_factory=list, description="The LoRAs of the characters in frame.")
    rung: Rung = Field("final", description="The quality ladder's rung (nightshift/ladder.py): the plan's specs are "
                                            "final; a draft or animatic stands in for one until it renders.")


class RenderPlan(_Model):
    schema_version: str = SCHEMA_VERSION
    title: str = Field(max_length=TITLE_MAX)
    source_name: str = Field(max_length=NAME_MAX)
    shotlist_sha256: str = Field(description="sha256 of the shotlist.json these specs were written from.")
    family: ModelFamily
    templates: dict[str, str] = Field(default_factory=dict, description="Template name -> sha256.")
    specs: list[RenderSpec]


def slugify(text: str, fallback: str = "untitled") -> str:
    """A file-system-safe, lowercase name; never empty, never starts with a dash or dot."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60].strip("-")
    return slug or fallback


RUNGS: tuple[Rung, ...] = ("animatic", "draft", "final")


def spec_sha256(spec: RenderSpec) -> str:
    """What a rendered clip depends on. The transition is left out: it is how the cut joins the shot to the
    next, and every shot is encoded ready for any transition, so changing one re-cuts but never re-renders."""
    # A keyframe's from_shot is left out when unset, so specs made before continuity existed keep their hash.
    unset = {i: {"from_shot"} for i, key in enumerate(spec.keyframes) if key.from_shot is None}
    exclude: dict[str, object] = {"transition": True, "keyframes": unset}
    exclude.update({name: True for name in ("references", "loras") if not getattr(spec, name)})  # likewise
    if spec.rung == "final":
        exclude["rung"] = True  # likewise: a plan's spec hashes as it did before the ladder
    return hashlib.sha256(spec.model_dump_json(exclude=exclude).encode()).hexdigest()


# --------------------------------------------------------------------------- clips


class CutRecord(_Model):
    """How the cut was made: what was copied as rendered, what was encoded, with which settings."""

    file: str
    frames: int
    fps: float
    copied_frames: int = Field(description="Frames joined by stream copy, bit for bit the shots' own.")
    encoded_frames: int = Field(description="Frames encoded for transitions (or all, when the cut was re-encoded).")
    transition_runs: int = 0
    reencoded_because: str | None = Field(None, description="Why the whole cut was encoded again, if it was.")
    encoded_as: str = Field(description="The settings the encoded frames were made with.")
    encode_settings: dict[str, object] = Field(default_factory=dict)
    digital_source_type: str = Field(description="IPTC digital source type, derived from the shots.")
    seconds: float = 0.0


class ClipRecord(_Model):
    """What was rendered for one shot, how, and where it went."""

    shot_id: ShotId
    backend: str
    animatic: bool
    model_id: str | None
    weights: str | None = None
    weights_revision: str | None = None
    pipeline: str | None = None
    quantization: str = "none"
    tier: str
    attempts: list[str] = Field(default_factory=list, description="Tiers that ran out of memory before `tier`.")
    memory_reason: str | None = None
    device: str
    seed: int | None = None
    steps: int | None = None
    width: int
    height: int
    fps: float
    frames: int
    audio: bool = False
    conditioning: list[str] = Field(default_factory=list)
    keyframes: list[str] = Field(default_factory=list)
    upscaled_to: str
    encoded_as: str | None = None
    upscale_settings: dict[str, object] = Field(default_factory=dict, description="What `nightshift reproduce` uses.")
    encode_settings: dict[str, object] = Field(default_factory=dict)
    keyframe_settings: dict[str, object] = Field(default_factory=dict, description="The text-to-image model, steps, guidance.")
    scheduler: str | None = None
    file: str
    sha256: str = Field(description="The clip as delivered (after signing, its Content Credentials included).")
    rendered_sha256: str | None = Field(None, description="The clip as rendered, before signing.")
    spec_sha256: str | None = None
    started: str
    finished: str
    seconds: float
    rendered_on: str | None = Field(None, description="The host that rendered this clip.")
    comfyui: dict[str, object] = Field(default_factory=dict, description="For a ComfyUI render: the server, its "
                                       "version and devices, the workflow file and sha256, the exact graph sent, its "
                                       "node types and model files, the prompt id, and whether the output was cached.")
    look: dict[str, object] = Field(default_factory=dict, description="Reference images and LoRAs used: each "
                                                                      "file's sha256, each adapter's weight.")
    speed: dict[str, object] = Field(default_factory=dict, description="diffusers speed settings it ran with: step "
                                                                       "cache, compiled blocks, attention backend.")
    continues_from: ShotId | None = Field(None, description="Continuity: the shot whose last frame this clip starts on.")
    continues_frame_sha256: str | None = Field(None, description="The sha256 of that frame (keyframes/<shot>-end.png) "
                                                                 "as it was used; a new one renders this shot again.")
    rung: Rung = Field("final", description="The quality ladder's rung this clip is at.")
    family: ModelFamily | None = Field(None, description="The model family of the spec it rendered (the forecast's "
                                                         "history: nightshift/forecast.py).")
    render_size: list[int] = Field(default_factory=list, description="Width and height it rendered at, before the 4K fit.")
    stands_for: str | None = Field(None, description="A draft or animatic: the sha256 of the final spec it stands in "
                                                     "for (its own spec is `rung_spec`).")
    rung_spec: dict[str, object] | None = Field(None, description="A draft or animatic: the RenderSpec it rendered.")
    notes: list[str] = Field(default_factory=list)
