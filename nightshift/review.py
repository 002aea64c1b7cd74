"""The morning review: marks on a delivery's shots, and the redo jobs they make.

A mark approves a shot, asks for it again (with a note, changes to its fields, a new first frame),
or withdraws an earlier mark. Marks are kept by the studio, never in the delivery (a delivered
version is never modified): `.nightshift/reviews/<date>/<name>.json`, uploads in
`.nightshift/reviews/uploads/`. Redo marks on one delivery go into one queued job (jobs.RedoOrder)
until that job starts; the night renders only those shots into a new version (nightshift/versions.py),
whose manifest carries every mark. An approved shot is never rendered again unless its approval is
withdrawn, in this version or any later version that carries the same shot.

`nightshift mark` and the review page (nightshift/review_app.py) both call `mark_shots`.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import io
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from nightshift.config import Settings
from nightshift.delivery import read_manifest
from nightshift.edits import REVIEW_FIELDS, Mark, MarkAction
from nightshift.errors import NightshiftError
from nightshift.files import atomic_output, inside, now_utc, write_atomic
from nightshift.jobs import Job, JobStore, RedoOrder
from nightshift.leases import LeaseBook, Owner, lease_key
from nightshift.plan_files import SHOTLIST_JSON, load_plan_folder, load_shotlist
from nightshift.provenance import MANIFEST_JSON
from nightshift.records import with_continuations
from nightshift.schemas import Shot

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # a 4K PNG is ~10-20 MB
MAX_UPLOAD_PIXELS = 8192 * 8192
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class ShotReview:
    """Where one shot of a delivery stands in review."""

    state: str  # "approved", "redo" (queued or rendering in `job`), "redone" (in `done_in`), or "" (not marked)
    mark: Mark | None = None
    job: str | None = None
    inherited_from: str | None = None  # an approval made on an earlier version that carried these same bytes
    done_in: str | None = None  # the version the redo was delivered in


class ReviewBook:
    """Every mark made in one studio, by delivery."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        studio = settings.resolve(Path(".nightshift"))
        self.root = studio / "reviews"
        self.output = settings.resolve(settings.paths.output)
        self.jobs = JobStore(studio / "jobs")
        self.work_root = studio / "work"
        self.leases = LeaseBook.of(studio / "leases")

    # ------------------------------------------------------------------ deliveries

    def delivery(self, reference: Path | str) -> tuple[Path, str]:
        """A delivery folder (a path, or DATE/NAME under the output folder) and its key, DATE/NAME."""
        path = Path(reference)
        candidates = [path, self.output / path] if not path.is_absolute() else [path]
        for candidate in candidates:
            if (candidate / MANIFEST_JSON).is_file():
                folder = inside(candidate, self.output, what="delivery")
                key = folder.relative_to(self.output.resolve()).as_posix()
                if key.count("/") != 1 or key.startswith("."):
                    break
                return folder, key
        raise NightshiftError(f"{reference} is not a delivery of this studio ({self.output})",
                              "name a folder like output/2026-12-01/the-last-keeper (see `nightshift review`)")

    def _path(self, key: str) -> Path:
        if not is_delivery_key(key):  # keys also come from records on disk (a manifest's parent, a job)
            raise NightshiftError(f"{key!r} is not a delivery of this studio", "name it as DATE/NAME under output/")
        return self.root / f"{key}.json"

    def marks(self, key: str) -> list[Mark]:
        path = self._path(key)
        if not path.is_file():
            return []
        try:
            return [Mark.model_validate(m) for m in json.loads(path.read_text(encoding="utf-8"))["marks"]]
        except (ValueError, KeyError, TypeError) as error:
            raise NightshiftError(f"{path} cannot be read ({error})",
                                  "it was edited by hand; restore it or remove it (its marks are then lost)") from None

    def _save(self, key: str, marks: list[Mark]) -> None:
        write_atomic(self._path(key), json.dumps({"marks": [m.model_dump(mode="json") for m in marks]}, indent=2,
                                                 ensure_ascii=False))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One mark at a time in a studio (two reviewers, a page and a command): none is lost."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ------------------------------------------------------------------ state

    def states(self, key: str, _seen: frozenset[str] = frozenset()) -> dict[str, ShotReview]:
        """Each marked shot's state; approvals of an earlier version carry to the shots it passed on unchanged."""
        states: dict[str, ShotReview] = {}
        folder = self.output / key
        manifest = read_manifest(folder) if (folder / MANIFEST_JSON).is_file() else None
        if (manifest is not None and manifest.parent is not None and is_delivery_key(manifest.parent.path)
                and manifest.parent.path not in _seen | {key}):
            inherited = self.states(manifest.parent.path, _seen | {key})
            for shot in manifest.carried_shots:
                review = inherited.get(shot)
                if review is not None and review.state == "approved":
                    states[shot] = ShotReview("approved", review.mark, None, review.inherited_from or manifest.parent.path)
        for mark in self.marks(key):
            if mark.action == "approve":
                states[mark.shot] = ShotReview("approved", mark)
            elif mark.action == "redo":
                states[mark.shot] = self._redo_state(mark)
            else:
                states.pop(mark.shot, None)
        return states

    def _redo_state(self, mark: Mark) -> ShotReview:
        job = self.jobs.load(mark.job) if mark.job and self.jobs.path(mark.job).is_file() else None
        if job is not None and job.state == "delivered" and job.delivery:
            return ShotReview("redone", mark, job.id, done_in=delivery_key(self.output, job.delivery))
        if job is not None and job.state == "failed":
            return ShotReview("redo failed", mark, job.id)
        return ShotReview("redo", mark, mark.job)

    def redo_jobs(self, key: str) -> list[Job]:
        """Jobs made from marks on this delivery, oldest first."""
        return [j for j in self.jobs.all() if j.redo is not None and j.redo.parent == key]

    # ------------------------------------------------------------------ marking

    def mark(self, reference: Path | str, shots: list[str], action: MarkAction, note: str = "",
             changes: dict[str, str] | None = None, keyframe: bytes | None = None,
             who: str | None = None) -> tuple[list[Mark], Job | None]:
        """Mark shots of a delivery; redo marks go into the delivery's queued redo job (made if needed).
        Returns the marks made and the job they went into (None for approve and withdraw)."""
        folder, key = self.delivery(reference)
        shotlist, _ = load_shotlist(folder / SHOTLIST_JSON)
        by_id = {shot.id: shot for shot in shotlist.shots}
        unknown = [s for s in shots if s not in by_id]
        if not shots or unknown:
            raise NightshiftError(f"{key}: no shot {', '.join(unknown) or '(none named)'}",
                                  f"shot ids look like {shotlist.shots[0].id}; see {folder / 'shotlist.md'}")
        changes = dict(changes or {})
        if (changes or keyframe) and action != "redo":
            raise NightshiftError(f"{key}: changes to a shot render it again",
                                  "use --redo with --set (or the Redo button with your changes)")
        uploaded = store_upload(self.root / "uploads", keyframe) if keyframe else None
        who = who or getpass.getuser()
        made: list[Mark] = []
        job = None
        with self._locked():
            states = self.states(key)
            existing = self.marks(key)
            for shot_id in shots:
                shot = by_id[shot_id]
                before, after = validated_changes(key, shot, changes)
                if uploaded is not None:
                    slot = f"images/{shot_id}-first-{uploaded[:12]}.png"
                    before["first_frame_image"], after["first_frame_image"] = shot.first_frame_image, slot
                state = states.get(shot_id)
                if action == "redo":
                    self._check_chain(key, folder, shot_id, states)
                if action == "redo" and state is not None and state.state == "approved":
                    where = f" (approved on {state.inherited_from})" if state.inherited_from else ""
                    raise NightshiftError(f"{key}: {shot_id} is approved{where}; an approved shot is not rendered again",
                                          f"withdraw the approval first: nightshift mark {key} {shot_id} --withdraw")
                mark = Mark(id=secrets.token_hex(6), delivery=key, shot=shot_id, action=action, note=note.strip(),
                            changes=after, before=before, keyframe=f"{uploaded}.png" if uploaded else None, who=who,
                            when=now_utc())
                if action == "redo":
                    job = self._queue_redo(key, folder, mark)
                    mark.job = job.id
                elif state is not None and state.state == "redo" and state.job:
                    self._unqueue(key, shot_id, state.job)  # an approval or a withdrawal replaces a redo not started
                made.append(mark)
            self._save(key, existing + made)
        return made, job

    @staticmethod
    def _check_chain(key: str, folder: Path, shot_id: str, states: dict[str, ShotReview]) -> None:
        """A shot that continues the one redone renders again with it: not when it is approved."""
        _, plan = load_plan_folder(folder)
        chain, _ = with_continuations(plan.specs, [s for s in plan.specs if s.shot_id == shot_id])
        held = [s.shot_id for s in chain if s.shot_id != shot_id and states.get(s.shot_id, ShotReview("")).state == "approved"]
        if held:
            raise NightshiftError(f"{key}: {', '.join(held)} continue{'s' if len(held) == 1 else ''} {shot_id} and "
                                  f"{'is' if len(held) == 1 else 'are'} approved; redoing {shot_id} would render "
                                  f"{'it' if len(held) == 1 else 'them'} again", f"withdraw the approval first: "
                                  f"nightshift mark {key} {' '.join(held)} --withdraw")

    def _queue_redo(self, key: str, folder: Path, mark: Mark) -> Job:
        """Add a redo to the delivery's queued job, under that job's lease (so it cannot start meanwhile)."""
        jobs = self.redo_jobs(key)
        for job in reversed(jobs):
            if job.state in ("delivered", "failed"):
                continue
            lease = self.leases.take(lease_key("job", job.id), what="adding a review mark")
            if isinstance(lease, Owner):
                continue
            with lease:
                job = self.jobs.load(job.id)
                if self._started_under_lease(job):
                    continue
                assert job.redo is not None
                if mark.shot not in job.redo.shots:
                    job.redo.shots.append(mark.shot)
                job.redo.marks.append(mark.model_dump(mode="json"))
                job.log(f"review: {mark.shot} to redo ({mark.who})")
                self.jobs.save(job)
                return job
        rendering = [j for j in jobs if j.state not in ("delivered", "failed")]
        # A cut a progressive night is still climbing: the redo waits for its delivery and is made from it.
        rendering += [j for j in self.jobs.pending() if j.cut and Path(j.cut) == folder and j not in rendering]
        manifest = read_manifest(folder)
        now = datetime.now()
        job_id = (f"{now:%Y%m%dT%H%M%S}-{hashlib.sha256(key.encode()).hexdigest()[:10]}-{secrets.token_hex(3)}")
        job = Job(id=job_id, script_name=manifest.inputs.script.name, script_sha256=manifest.inputs.script.sha256,
                  claimed_path="", title=manifest.title, work_folder=str(self.work_root / job_id),
                  created=now.isoformat(timespec="microseconds"),
                  redo=RedoOrder(parent=key, after_job=rendering[-1].id if rendering else None, shots=[mark.shot],
                                 marks=[mark.model_dump(mode="json")]))
        job.log(f"review: {mark.shot} to redo ({mark.who}); a new version of {key}"
                + (f", after job {job.redo.after_job}" if job.redo.after_job else ""))
        self.jobs.save(job)
        return job

    @staticmethod
    def _started_under_lease(job: Job) -> bool:
        return job.state != "queued" or job.night_started is not None

    def _unqueue(self, key: str, shot_id: str, job_id: str) -> None:
        lease = self.leases.take(lease_key("job", job_id), what="withdrawing a review mark")
        if isinstance(lease, Owner):
            raise NightshiftError(f"{key}: {shot_id} is being rendered again now ({lease.describe()})",
                                  "review the new version when it is delivered")
        with lease:
            job = self.jobs.load(job_id)
            if self._started_under_lease(job) or job.redo is None:
                raise NightshiftError(f"{key}: {shot_id} is already being rendered again (job {job_id}, {job.state})",
                                      "review the new version when it is delivered")
            job.redo.shots = [s for s in job.redo.shots if s != shot_id]
            job.redo.marks = [m for m in job.redo.marks if m.get("shot") != shot_id]
            if not job.redo.shots:
                self.jobs.path(job_id).unlink()  # never started, nothing left to do: the job is gone
                return
            job.log(f"review: {shot_id} no longer to redo")
            self.jobs.save(job)


def is_delivery_key(key: str) -> bool:
    """DATE/NAME: one folder of one night under the studio's output, neither hidden nor a way out."""
    parts = key.split("/")
    return len(parts) == 2 and all(part and part not in (".", "..") and not part.startswith(".") for part in parts)


def delivery_key(output: Path, folder: Path | str) -> str | None:
    """A delivery folder's DATE/NAME key, or None when it is not one of this studio's deliveries."""
    try:
        key = Path(folder).resolve().relative_to(output.resolve()).as_posix()
    except ValueError:
        return None
    return key if is_delivery_key(key) else None


def approved_shots(settings: Settings, folder: Path, shot_ids: list[str]) -> list[str]:
    """Those of `shot_ids` approved in review, when `folder` is one of this studio's deliveries."""
    book = ReviewBook(settings)
    try:
        _, key = book.delivery(folder)
    except NightshiftError:
        return []  # a plan folder, or a delivery of another studio: nothing approved here
    states = book.states(key)
    return [i for i in shot_ids if i in states and states[i].state == "approved"]


def validated_changes(key: str, shot: Shot, changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields asked for, checked against the shot-list schema: (before, after) by field."""
    unknown = [name for name in changes if name not in REVIEW_FIELDS]
    if unknown:
        raise NightshiftError(f"{key}: {shot.id}: {', '.join(unknown)} cannot be changed in review",
                              f"fields you may set: {', '.join(REVIEW_FIELDS)}")
    current = shot.model_dump(mode="json")
    try:
        edited = Shot.model_validate({**current, **changes}).model_dump(mode="json")
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise NightshiftError(f"{key}: {shot.id}: {problems}", "see shotlist.schema.json for what each field takes") from None
    changed = [name for name in changes if edited[name] != current[name]]
    return {name: current[name] for name in changed}, {name: edited[name] for name in changed}


def store_upload(folder: Path, data: bytes) -> str:
    """A keyframe image from a reviewer, checked to be an image and stored as PNG; returns its sha256."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise NightshiftError(f"the image is {len(data) / 1e6:.1f} MB; at most {MAX_UPLOAD_BYTES / 1e6:.0f} MB",
                              "export a smaller PNG or JPEG")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in UPLOAD_FORMATS:
                raise NightshiftError(f"the file is {probe.format or 'not an image'}; a keyframe must be PNG, JPEG or WebP",
                                      "export the frame as PNG")
            if probe.width * probe.height > MAX_UPLOAD_PIXELS:
                raise NightshiftError(f"the image is {probe.width}x{probe.height}; at most {MAX_UPLOAD_PIXELS:,} pixels",
                                      "export it at the delivery's size")
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            picture = image.convert("RGB")  # what we keep is pixels, re-encoded: nothing else of the upload travels
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise NightshiftError(f"the file is not a readable image ({error})", "upload a PNG, JPEG or WebP") from None
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    png = buffer.getvalue()
    digest = hashlib.sha256(png).hexdigest()
    target = folder / f"{digest}.png"
    if not target.is_file():
        with atomic_output(target) as tmp:
            tmp.write_bytes(png)
    return digest


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`--set FIELD=VALUE` pairs."""
    changes = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise NightshiftError(f"--set {pair!r} is not FIELD=VALUE", f"e.g. --set framing=wide; fields: {', '.join(REVIEW_FIELDS)}")
        changes[name.strip()] = value
    return changes
