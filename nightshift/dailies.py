"""What the morning review shows: the studio's deliveries by night, the versions of each film, each shot.

Plain records read from the delivered folders (manifest.json, shotlist.json) and the studio's marks
(nightshift/review.py); the review page (nightshift/review_app.py) only lays them out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from nightshift.delivery import read_manifest
from nightshift.errors import NightshiftError
from nightshift.files import atomic_output, inside
from nightshift.jobs import Job
from nightshift.plan_files import SHOTLIST_JSON, load_plan_folder, load_shotlist
from nightshift.provenance import MANIFEST_JSON, Manifest
from nightshift.review import ReviewBook, ShotReview, is_delivery_key
from nightshift.schemas import slugify
from nightshift.records import load_records
from nightshift.renderers.continuity import continues_from
from nightshift.renderers.storyboard import shot_picture


@dataclass
class ShotView:
    id: str
    scene: int
    heading: str
    framing: str
    camera_move: str
    duration_s: float
    action: str
    dialogue: str
    first_frame: str
    last_frame: str
    motion: str
    user_prompt: str | None
    prompt: str
    seed: int
    model: str
    quantization: str
    tier: str
    device: str
    backend: str
    animatic: bool
    render_s: float
    frames: int
    fps: float
    take: int
    rung: str  # the quality ladder's rung this clip is at (a draft stands in for its final)
    video: str  # path inside the delivery
    review: ShotReview
    new_in_version: bool  # rendered for this version (not carried from the parent)
    continues: str | None  # the shot whose last frame this one starts on
    notes: list[str] = field(default_factory=list)  # review notes that led to this take


@dataclass
class DeliveryView:
    key: str  # DATE/NAME under the output folder
    folder: Path
    manifest: Manifest
    night: str
    cut: str | None
    shots: list[ShotView]
    jobs: list[Job]  # redo jobs made from this delivery
    root: str  # the first version of this film
    children: list[str] = field(default_factory=list)  # versions made from this one

    @property
    def title(self) -> str:
        return self.manifest.title

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def animatic(self) -> bool:
        return all(shot.animatic for shot in self.shots)

    def count(self, state: str) -> int:
        return sum(1 for shot in self.shots if shot.review.state == state)


class Dailies:
    """The studio's deliveries as one page sees them: made for each request (a night may deliver while the page
    is open), reading each manifest once."""

    def __init__(self, book: ReviewBook) -> None:
        self.book = book
        self.output = book.output.resolve()
        self._manifests: dict[str, Manifest | None] = {}
        self._parents: dict[str, str | None] | None = None

    def manifest(self, key: str) -> Manifest | None:
        if key not in self._manifests:
            try:
                self._manifests[key] = read_manifest(self.output / key)
            except (OSError, ValueError):
                self._manifests[key] = None  # unreadable: not listed (verify says why)
        return self._manifests[key]

    def keys(self) -> list[str]:
        """Every delivery, newest night first, by name within a night."""
        keys = []
        for night in sorted((p for p in self.output.iterdir() if p.is_dir()), reverse=True) if self.output.is_dir() else []:
            if night.name.startswith(".") or night.name == "plans":
                continue
            keys += [f"{night.name}/{d.name}" for d in sorted(night.iterdir())
                     if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_JSON).is_file()]
        return keys

    def folder(self, key: str) -> Path:
        if not is_delivery_key(key):
            raise NightshiftError(f"no delivery {key!r}", "pick one from the list of nights")
        folder = inside(self.output / key, self.output, what="delivery")
        if not (folder / MANIFEST_JSON).is_file():
            raise NightshiftError(f"no delivery {key!r}", "pick one from the list of nights")
        return folder

    def parents(self) -> dict[str, str | None]:
        """Each readable delivery and the version it was made from."""
        if self._parents is None:
            self._parents = {key: manifest.parent.path if manifest.parent is not None else None
                             for key in self.keys() if (manifest := self.manifest(key)) is not None}
        return self._parents

    def root_of(self, key: str, parents: dict[str, str | None]) -> str:
        seen = {key}
        while (parent := parents.get(key)) is not None and parent in parents and parent not in seen:
            seen.add(parent)
            key = parent
        return key

    def films(self) -> list[tuple[str, list[str]]]:
        """(first version, every version of that film oldest first), newest film first."""
        parents = self.parents()
        films: dict[str, list[str]] = {}
        for key in parents:
            films.setdefault(self.root_of(key, parents), []).append(key)
        order = self.keys()
        return sorted(((root, sorted(keys, key=lambda k: self.manifest(k).version))
                       for root, keys in films.items()), key=lambda film: order.index(film[0]))

    def delivery(self, key: str) -> DeliveryView:
        folder = self.folder(key)
        manifest = self.manifest(key)
        if manifest is None:
            raise NightshiftError(f"{key}: manifest.json cannot be read", f"run nightshift verify {folder}")
        shotlist, _ = load_shotlist(folder / SHOTLIST_JSON)
        shots = {shot.id: shot for shot in shotlist.shots}
        headings = {scene.number: scene.heading for scene in shotlist.scenes}
        states = self.book.states(key)
        notes: dict[str, list[str]] = {}
        for mark in manifest.review:
            if mark.action == "redo" and mark.note:
                notes.setdefault(mark.shot, []).append(mark.note)
        views = []
        for record in manifest.shots:
            spec, clip, shot = record.spec, record.clip, shots.get(record.spec.shot_id)
            if shot is None:
                raise NightshiftError(f"{key}: {spec.shot_id} is in manifest.json but not in shotlist.json",
                                      f"run nightshift verify {folder}")
            views.append(ShotView(
                id=spec.shot_id, scene=shot.scene, heading=headings.get(shot.scene, ""), framing=shot.framing.value,
                camera_move=shot.camera_move.value, duration_s=shot.duration_s, action=shot.action,
                dialogue=shot.dialogue, first_frame=shot.first_frame, last_frame=shot.last_frame, motion=shot.motion,
                user_prompt=shot.prompt, prompt=spec.prompt, seed=spec.seed,
                model=clip.model_id or "animatic (no model)", quantization=clip.quantization, tier=clip.tier,
                device=clip.device, backend=clip.backend, animatic=clip.animatic, render_s=clip.seconds,
                frames=clip.frames, fps=clip.fps, take=shot.take, rung=clip.rung, video=clip.file,
                review=states.get(spec.shot_id, ShotReview("")),
                new_in_version=manifest.parent is not None and spec.shot_id not in manifest.carried_shots,
                continues=continues_from(spec),
                notes=notes.get(spec.shot_id, [])))
        parents = self.parents()
        cut = f"{slugify(manifest.title)}.mp4"
        return DeliveryView(key=key, folder=folder, manifest=manifest, night=key.split("/")[0],
                            cut=cut if (folder / cut).is_file() else None, shots=views,
                            jobs=self.book.redo_jobs(key), root=self.root_of(key, parents),
                            children=[k for k, p in parents.items() if p == key])

    def frame(self, key: str, shot_id: str, cache: Path) -> Path:
        """The shot's storyboard frame as a JPEG (its keyframe, else its middle frame), cached by clip."""
        folder = self.folder(key)
        shotlist, plan = load_plan_folder(folder)
        shot = next((s for s in shotlist.shots if s.id == shot_id), None)
        spec = next((s for s in plan.specs if s.shot_id == shot_id), None)
        record = load_records(folder).get(shot_id)
        if shot is None or spec is None or record is None:
            raise NightshiftError(f"{key}: no shot {shot_id!r}", "pick a shot from the delivery's page")
        target = cache / f"{hashlib.sha256(f'{key}|{shot_id}|{record.sha256}'.encode()).hexdigest()[:32]}.jpg"
        if not target.is_file():
            picture = shot_picture(folder, shot, spec).convert("RGB")
            picture.thumbnail((640, 360))
            cache.mkdir(parents=True, exist_ok=True)
            with atomic_output(target) as tmp:
                picture.save(tmp, format="JPEG", quality=85)
        return target
