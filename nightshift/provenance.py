"""manifest.json: a complete, machine-checkable record of how a delivery was made.

Inputs (the script, user keyframe images), planning (planner, model and digest, options,
templates, the exact exchanges, the bibles), every human edit, each shot's spec, model weights
(sha256 per file), memory tier, device and timing, the environment, and every delivered file
with what it was made from.

`provenance_sha256` is the sha256 of the manifest without its outputs and signature: the cut's
Content Credentials carry it, so the cut names the exact record it belongs to. The outputs list
holds every delivered file's sha256 as delivered (signed MP4s included), and manifest.json as a
whole is signed by the same identity as the MP4s (manifest.jws), so every file and every hash
the record states is under one signature.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from nightshift.machine import machine_name
from nightshift import __version__
from nightshift.edits import (EDITS_JSON, LAST_SHOTLIST, PLANNED_SHOTLIST, PROVENANCE_DIR, Edit, Mark, load_edits,
                             script_copy_name)
from nightshift.schemas import ClipRecord, CutRecord, PlannerInfo, RenderPlan, RenderSpec, ShotList
from nightshift.files import sha256_file, write_atomic

MANIFEST_JSON, MANIFEST_MD, MANIFEST_SCHEMA = "manifest.json", "manifest.md", "manifest.schema.json"
MANIFEST_VERSION = "4"  # 4: versions (parent, review marks, shots carried unchanged)
READABLE_VERSIONS = ("3", "4")
PACKAGES = ("torch", "diffusers", "transformers", "prefect", "av", "ollama", "c2pa-python", "pydantic", "jinja2")


class FileRef(BaseModel):
    path: str
    sha256: str
    bytes: int


class ScriptInput(BaseModel):
    name: str = Field(description="The file name as the user dropped it.")
    sha256: str
    stored_as: str | None = Field(None, description="Its copy in this delivery.")


class Inputs(BaseModel):
    script: ScriptInput
    keyframe_images: list[FileRef] = Field(default_factory=list, description="Images the user supplied: keyframes "
                                                                             "and characters' reference images.")


class Planning(BaseModel):
    planner: PlannerInfo
    templates: dict[str, str] = Field(default_factory=dict, description="Prompt template name -> sha256.")
    style_bible: str = ""
    character_bible: dict[str, str] = Field(default_factory=dict)
    exchanges: list[FileRef] = Field(default_factory=list, description="Stored prompts and answers, one file each.")
    machine_shotlist: FileRef | None = Field(None, description="The shot list as the planner made it.")
    edit_history: FileRef | None = Field(None, description="provenance/edits.json, the human edits below.")


class ModelWeights(BaseModel):
    model_id: str
    path: str
    revision: str | None = None
    files: list[FileRef] = Field(default_factory=list)


class ShotProvenance(BaseModel):
    spec: RenderSpec
    clip: ClipRecord


class Environment(BaseModel):
    nightshift: str = __version__
    git_commit: str | None = None
    python: str = Field(default_factory=lambda: sys.version.split()[0])
    packages: dict[str, str | None] = Field(default_factory=dict)
    os: str = Field(default_factory=lambda: f"{platform.system()} {platform.release()}")
    machine: str = Field(default_factory=lambda: f"{platform.machine()} {machine_name()}")


class OutputFile(FileRef):
    derived_from: list[str] = Field(default_factory=list, description="Inputs, files or models it was made from.")
    signed: bool = False


class Signature(BaseModel):
    format: str = "C2PA in every MP4; manifest.jws (detached JWS) for manifest.json"
    algorithm: str = "ES256"
    signer: str = Field(description="The signing certificate's subject, issuer and serial number.")
    serial: str = Field("", description="The signing certificate's serial number (hex).")
    local_ca: bool


class ParentVersion(BaseModel):
    path: str = Field(description="The delivery this version was made from, relative to the studio's output folder.")
    version: int
    manifest_sha256: str = Field(description="sha256 of the parent's manifest.json as it was when this version was made.")
    provenance_sha256: str


class Lineage(BaseModel):
    """Where a delivery stands among the versions of one film: version 1 has no parent."""

    version: int = 1
    parent: ParentVersion | None = None
    review: list[Mark] = Field(default_factory=list, description="The review marks on the parent this version answers.")
    carried_shots: list[str] = Field(default_factory=list,
                                     description="Shots passed on from the parent unchanged: the same bytes.")


class Manifest(BaseModel):
    manifest_version: str = MANIFEST_VERSION
    title: str
    version: int = 1
    parent: ParentVersion | None = None
    review: list[Mark] = Field(default_factory=list, description="The review marks on the parent this version answers.")
    carried_shots: list[str] = Field(default_factory=list,
                                     description="Shots passed on from the parent unchanged: the same bytes.")
    job_id: str | None = None
    renderer: str
    night_started: str | None = None
    delivered: str
    inputs: Inputs
    planning: Planning
    edits: list[Edit] = Field(default_factory=list, description="Every human change to the machine's shot list.")
    models: list[ModelWeights] = Field(default_factory=list)
    shots: list[ShotProvenance]
    cut: CutRecord | None = None
    rungs: dict[str, int] = Field(default_factory=dict, description="Shots of the cut at each rung of the quality "
                                  "ladder (final, draft, animatic); each shot's own is in its clip record.")
    environment: Environment
    history: list[str] = Field(default_factory=list)
    provenance_sha256: str = Field("", description="sha256 of everything above; carried by every signed MP4.")
    signature: Signature | None = None
    outputs: list[OutputFile] = Field(default_factory=list)

    @property
    def clips(self) -> list[ClipRecord]:
        return [shot.clip for shot in self.shots]

    @property
    def files(self) -> list[OutputFile]:
        return self.outputs

    @property
    def lineage(self) -> Lineage:
        return Lineage(version=self.version, parent=self.parent, review=self.review, carried_shots=self.carried_shots)


def provenance_digest(manifest: Manifest | dict[str, Any]) -> str:
    """sha256 of the record without outputs and signature, over the JSON as written (so a later
    Nightshift with more fields still checks an older manifest)."""
    data = manifest.model_dump(mode="json") if isinstance(manifest, Manifest) else manifest
    core = {key: value for key, value in data.items() if key not in ("provenance_sha256", "signature", "outputs")}
    # A clip's delivered sha256 changes when it is signed with this very digest, so it stays out;
    # its rendered_sha256 (before signing) is in.
    core["shots"] = [{**shot, "clip": {k: v for k, v in shot["clip"].items() if k != "sha256"}}
                     for shot in data.get("shots", [])]
    return hashlib.sha256(json.dumps(core, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def manifest_schema() -> str:
    return json.dumps(Manifest.model_json_schema(), indent=2) + "\n"


def file_ref(folder: Path, relative: str) -> FileRef:
    path = folder / relative
    return FileRef(path=relative, sha256=sha256_file(path), bytes=path.stat().st_size)


# --------------------------------------------------------------------------- environment and weights


def environment() -> Environment:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return Environment(git_commit=_git_commit(), packages=packages)


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _hash_cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nightshift" / "weights-sha256.json"


def hash_weight_files(folder: Path) -> list[FileRef]:
    """sha256 of every file of a model folder; each computed once and cached by path, size and mtime."""
    cache_path = _hash_cache_path()
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    refs, changed = [], False
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        real = path.resolve()  # HF cache snapshots are symlinks into blobs/
        stat = real.stat()
        key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in cache:
            cache[key], changed = sha256_file(real), True
        refs.append(FileRef(path=path.relative_to(folder).as_posix(), sha256=cache[key], bytes=stat.st_size))
    if changed:
        try:
            write_atomic(cache_path, json.dumps(cache, indent=0))
        except OSError:
            pass  # a read-only home only costs re-hashing next time
    return refs


def model_weights(clips: list[ClipRecord]) -> list[ModelWeights]:
    seen: dict[str, ModelWeights] = {}
    for clip in clips:
        if clip.weights and clip.weights not in seen and Path(clip.weights).is_dir():
            seen[clip.weights] = ModelWeights(model_id=clip.model_id or clip.weights, path=clip.weights,
                                              revision=clip.weights_revision, files=hash_weight_files(Path(clip.weights)))
    return list(seen.values())


# --------------------------------------------------------------------------- building


def build_manifest(folder: Path, shotlist: ShotList, plan: RenderPlan, records: dict[str, ClipRecord], *,
                   script_name: str, script_sha256: str, renderer: str, delivered: str, job_id: str | None = None,
                   night_started: str | None = None, history: list[str] = (), cut: CutRecord | None = None,
                   lineage: Lineage | None = None) -> Manifest:
    """The record of a delivery folder whose shots are rendered (outputs and signature come later)."""
    stored = script_copy_name(script_name)
    exchanges = sorted(p.relative_to(folder).as_posix() for p in (folder / PROVENANCE_DIR / "exchanges").glob("*.json"))
    user_images = sorted({k.image_path for s in plan.specs for k in s.keyframes if k.image_path}
                         | {image for s in plan.specs for image in s.references})  # keyframes and character references
    clips = [records[s.shot_id] for s in plan.specs]
    manifest = Manifest(
        title=plan.title, job_id=job_id, renderer=renderer, night_started=night_started, delivered=delivered,
        inputs=Inputs(script=ScriptInput(name=script_name, sha256=script_sha256,
                                         stored_as=stored if (folder / stored).is_file() else None),
                      keyframe_images=[file_ref(folder, p) for p in user_images if (folder / p).is_file()]),
        planning=Planning(planner=shotlist.planner, templates={**shotlist.planner.templates, **plan.templates},
                          style_bible=shotlist.style_bible, character_bible=shotlist.character_bible,
                          exchanges=[file_ref(folder, p) for p in exchanges],
                          machine_shotlist=file_ref(folder, PLANNED_SHOTLIST) if (folder / PLANNED_SHOTLIST).is_file() else None,
                          edit_history=file_ref(folder, EDITS_JSON) if (folder / EDITS_JSON).is_file() else None),
        edits=load_edits(folder), models=model_weights(clips),
        shots=[ShotProvenance(spec=s, clip=records[s.shot_id]) for s in plan.specs], cut=cut,
        rungs={rung: n for rung in ("final", "draft", "animatic") if (n := sum(c.rung == rung for c in clips))},
        environment=environment(), history=list(history), **(lineage or Lineage()).model_dump(),
    )
    manifest.provenance_sha256 = provenance_digest(manifest)
    return manifest


def derived_from(relative: str, manifest: Manifest, cut_name: str) -> list[str]:
    """The lineage of one delivered file: what it was made from (files in this folder, or a model)."""
    script = manifest.inputs.script.stored_as or f"script:{manifest.inputs.script.sha256}"
    clips = {f"shots/{c.shot_id}.mp4": c for c in manifest.clips}
    if relative in clips:
        clip = clips[relative]
        model = [f"model:{clip.model_id}"] if clip.model_id else ["animatic"]
        return [f"renderplan.json#{clip.shot_id}"] + clip.keyframes + model
    if relative.startswith("keyframes/"):
        return [f"renderplan.json#{relative.split('/')[-1].rsplit('-', 1)[0]}"]
    if relative == cut_name:
        return sorted(clips)
    stem, _, suffix = relative.rpartition(".")
    if "/" not in relative and f"{stem}.mp4" == cut_name and suffix in ("otio", "edl", "xml"):
        return [cut_name, "renders.json", "shotlist.json"]  # the editorial timeline of the cut
    return {
        "renderplan.json": ["shotlist.json", "templates"],
        "shotlist.json": [PLANNED_SHOTLIST, EDITS_JSON],
        "shotlist.md": ["shotlist.json"],
        "storyboard.pdf": ["shotlist.json", "renderplan.json"] + sorted(clips) + sorted(
            k for c in manifest.clips for k in c.keyframes),
        "renders.json": sorted(clips),
        PLANNED_SHOTLIST: [script] + [e.path for e in manifest.planning.exchanges],
        LAST_SHOTLIST: ["shotlist.json"],
        EDITS_JSON: [PLANNED_SHOTLIST, "shotlist.json"],
        MANIFEST_MD: [MANIFEST_JSON],
    }.get(relative, [])  # inputs (the script, exchanges, user images) and schemas come from nothing here


def write_manifest_md(folder: Path, manifest: Manifest, templates: Any) -> Path:
    text = templates.render("manifest.md.j2", manifest=manifest.model_dump(mode="json"),
                            human_edits=len(manifest.edits), shots=len(manifest.shots))
    return write_atomic(folder / MANIFEST_MD, text)
