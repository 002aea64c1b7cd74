"""The record of human creative control: the machine's shot list, and every change a person made to it.

At planning, the shot list as the planner made it is kept in provenance/shotlist.planned.json
and the script itself in provenance/. Each time an edited shotlist.json is taken up (`nightshift
plan --from-shotlist`, or `nightshift render` noticing the edit), the differences from the last
state seen are appended to provenance/edits.json: shot, field, before, after, when. The history
only grows; nothing in it is rewritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from nightshift.files import write_atomic
from nightshift.schemas import ShotList

PROVENANCE_DIR = "provenance"
PLANNED_SHOTLIST = f"{PROVENANCE_DIR}/shotlist.planned.json"
LAST_SHOTLIST = f"{PROVENANCE_DIR}/shotlist.last.json"
EDITS_JSON = f"{PROVENANCE_DIR}/edits.json"
SHOTLIST_FIELDS = ("title", "style_bible", "character_bible")  # the film-wide fields a person may change


class Edit(BaseModel):
    when: str
    source: str  # what took the edit up: "nightshift plan --from-shotlist", "nightshift render"
    shot: str | None  # None for a film-wide field
    field: str  # a Shot field, "(shot)" for a whole shot added or removed, or a film-wide field
    before: Any = None
    after: Any = None
    who: str | None = None  # the OS user, for an edit made through the review or `nightshift mark`
    note: str | None = None  # the reviewer's note that came with it


def script_copy_name(original_name: str) -> str:
    """The script's copy in provenance/ keeps only its extension: a user's file name is never a path here."""
    suffix = Path(original_name).suffix.lower()
    return f"{PROVENANCE_DIR}/script{suffix if suffix in ('.fountain', '.md', '.txt') else '.txt'}"


def start_history(folder: Path, shotlist: ShotList, script: Path | None, script_name: str,
                  exchanges: list[Path] = ()) -> None:
    """At planning: keep the script, the planner's exchanges and the shot list as the machine made it."""
    (folder / PROVENANCE_DIR).mkdir(parents=True, exist_ok=True)
    if script is not None:
        shutil.copyfile(script, folder / script_copy_name(script_name))
    for exchange in exchanges:
        target = folder / PROVENANCE_DIR / "exchanges" / exchange.name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(exchange, target)
    text = shotlist.model_dump_json(indent=2)
    write_atomic(folder / PLANNED_SHOTLIST, text)
    write_atomic(folder / LAST_SHOTLIST, text)
    if not (folder / EDITS_JSON).exists():
        write_atomic(folder / EDITS_JSON, json.dumps({"edits": []}, indent=2))


def diff_shotlists(before: ShotList, after: ShotList, when: str, source: str, who: str | None = None,
                   notes: dict[str, str] | None = None) -> list[Edit]:
    """Every field that differs, shot by shot (matched by id), plus shots added or removed; `notes` are the
    reviewer's, by shot."""
    edits = _diff(before, after, when, source)
    for edit in edits:
        edit.who = who
        edit.note = (notes or {}).get(edit.shot or "") or None
    return edits


def _diff(before: ShotList, after: ShotList, when: str, source: str) -> list[Edit]:
    edits: list[Edit] = []
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    for name in SHOTLIST_FIELDS:
        if old[name] != new[name]:
            edits.append(Edit(when=when, source=source, shot=None, field=name, before=old[name], after=new[name]))
    old_shots = {s["id"]: s for s in old["shots"]}
    new_shots = {s["id"]: s for s in new["shots"]}
    for shot_id, shot in new_shots.items():
        previous = old_shots.get(shot_id)
        if previous is None:
            edits.append(Edit(when=when, source=source, shot=shot_id, field="(shot)", before=None, after=shot))
            continue
        for name in sorted(set(shot) | set(previous)):
            if shot.get(name) != previous.get(name):
                edits.append(Edit(when=when, source=source, shot=shot_id, field=name,
                                  before=previous.get(name), after=shot.get(name)))
    for shot_id, shot in old_shots.items():
        if shot_id not in new_shots:
            edits.append(Edit(when=when, source=source, shot=shot_id, field="(shot)", before=shot, after=None))
    return edits


def record_edits(folder: Path, shotlist: ShotList, when: str, source: str, who: str | None = None,
                 notes: dict[str, str] | None = None) -> list[Edit]:
    """Append the differences between the last shot list seen and `shotlist`; returns what was added."""
    last = folder / LAST_SHOTLIST
    if not last.is_file():  # planned before provenance was kept: this state becomes the baseline
        start_history(folder, shotlist, None, "")
        return []
    added = diff_shotlists(ShotList.model_validate_json(last.read_text(encoding="utf-8")), shotlist, when, source,
                           who, notes)
    if added:
        history = load_edits(folder)
        write_atomic(folder / EDITS_JSON, json.dumps(
            {"edits": [e.model_dump(mode="json") for e in history + added]}, indent=2, ensure_ascii=False))
        write_atomic(last, shotlist.model_dump_json(indent=2))
    return added


def load_edits(folder: Path) -> list[Edit]:
    path = folder / EDITS_JSON
    if not path.is_file():
        return []
    return [Edit.model_validate(e) for e in json.loads(path.read_text(encoding="utf-8"))["edits"]]


MarkAction = Literal["approve", "redo", "withdraw"]
REVIEW_FIELDS = ("action", "prompt", "framing", "camera_move", "duration_s", "first_frame", "last_frame", "motion",
                 "lens", "dialogue", "sound")  # what a reviewer may change on a shot (a keyframe image besides)


class Mark(BaseModel):
    """One reviewer's mark on one shot of a delivery: approve it, render it again (with a note and changes),
    or withdraw an earlier mark. Kept by the studio (nightshift/review.py) and carried into the manifest of
    the version it led to."""

    id: str
    delivery: str  # the delivery folder marked, relative to the studio's output folder
    shot: str
    action: MarkAction
    note: str = ""
    changes: dict[str, Any] = {}  # shot field -> the value asked for
    before: dict[str, Any] = {}  # shot field -> the value in the delivery marked
    keyframe: str | None = None  # an uploaded first-frame image: its name in the studio's review uploads
    who: str  # the OS user
    when: str
    job: str | None = None  # the redo job it went into
