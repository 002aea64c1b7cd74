"""The one store of clip records: <folder>/renders.json, what was rendered for each shot and how.

A shot is done only when its record names exactly this spec and the clip on disk still has
the recorded hash (or, after signing, valid credentials naming the recorded render).
"""

from __future__ import annotations

import json
from pathlib import Path

from nightshift.files import inside, sha256_file, write_atomic
from nightshift.renderers.continuity import continuity_record, continues_from
from nightshift.schemas import ClipRecord, RenderSpec, Rung, spec_sha256
from nightshift.signing import read_credentials

RENDERS_JSON = "renders.json"


def load_records(folder: Path) -> dict[str, ClipRecord]:
    path = folder / RENDERS_JSON
    if not path.exists():
        return {}
    records = {}
    for raw in json.loads(path.read_text(encoding="utf-8"))["clips"]:
        record = ClipRecord.model_validate(raw)
        inside(folder / record.file, folder / "shots", what=f"{path}: clip file")  # never act on a path outside
        records[record.shot_id] = record
    return records


def save_records(folder: Path, records: dict[str, ClipRecord]) -> None:
    write_atomic(folder / RENDERS_JSON, json.dumps({"clips": [r.model_dump() for r in records.values()]}, indent=2))


def record_shot(folder: Path, record: ClipRecord) -> None:
    records = load_records(folder)
    records[record.shot_id] = record
    save_records(folder, records)


class VerifiedClips:
    """Clips already hashed and found as recorded, by the file's identity (inode, size, modification time):
    a loop that looks at a queue again every few seconds stats a finished clip instead of hashing it again.
    One per engine; delivery and `verify` always hash."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, int, int, int, str]] = set()

    @staticmethod
    def _identity(clip: Path, sha256: str) -> tuple[str, int, int, int, str]:
        stat = clip.stat()
        return str(clip), stat.st_ino, stat.st_size, stat.st_mtime_ns, sha256

    def known(self, clip: Path, sha256: str) -> bool:
        return self._identity(clip, sha256) in self._seen

    def add(self, clip: Path, sha256: str) -> None:
        self._seen.add(self._identity(clip, sha256))


def is_shot_done(folder: Path, spec: RenderSpec, record: ClipRecord | None,
                 verified: VerifiedClips | None = None) -> bool:
    """Done means: a record for exactly this spec, and the clip on disk still has the recorded hash; for a shot
    that continues another, also started on that shot's end frame as it is now."""
    if not _rendered(folder, spec, record, verified):
        return False
    carried = continues_from(spec)  # continuity: started on the end frame the shot before has now
    return carried is None or (record.continues_from == carried and record.continues_frame_sha256 ==
                               continuity_record(spec, folder / "keyframes")["continues_frame_sha256"])


def _rendered(folder: Path, spec: RenderSpec, record: ClipRecord | None, verified: VerifiedClips | None) -> bool:
    """This spec's clip, on disk as recorded. A clip signed again after its record was written (a crash between the two) still counts when
    its Content Credentials validate (they bind the file's bytes) and name the recorded render."""
    if record is None or record.spec_sha256 != spec_sha256(spec):
        return False
    clip = folder / record.file
    if not clip.is_file():
        return False
    if verified is not None and verified.known(clip, record.sha256):
        return True
    if sha256_file(clip) == record.sha256:
        if verified is not None:
            verified.add(clip, record.sha256)
        return True
    credentials = read_credentials(clip)
    return (record.rendered_sha256 is not None and credentials.present and not credentials.failures
            and credentials.nightshift is not None
            and credentials.nightshift.get("rendered_sha256") == record.rendered_sha256)


def shot_rung(folder: Path, spec: RenderSpec, record: ClipRecord | None,
              verified: VerifiedClips | None = None) -> Rung | None:
    """The rung this plan spec's shot is at (None: nothing watchable). A draft or animatic counts when it stands
    for exactly this spec, renders the same frames at the same rate (so the cut keeps its timing) and is on disk
    as recorded (a stand-in continuing a shot that has climbed since still stands: its chain climbs next, as a
    unit); a final, as `is_shot_done`."""
    if record is None:
        return None
    if record.rung == "final":
        return "final" if is_shot_done(folder, spec, record, verified) else None
    if record.stands_for != spec_sha256(spec) or record.rung_spec is None:
        return None
    try:
        stand_in = RenderSpec.model_validate(record.rung_spec)
    except ValueError:
        return None
    if (stand_in.shot_id, stand_in.num_frames, stand_in.fps, stand_in.rung) != (spec.shot_id, spec.num_frames,
                                                                                  spec.fps, record.rung):
        return None
    return record.rung if _rendered(folder, stand_in, record, verified) else None


def shot_rungs(folder: Path, specs: list[RenderSpec], verified: VerifiedClips | None = None) -> dict[str, Rung | None]:
    records = load_records(folder)
    return {spec.shot_id: shot_rung(folder, spec, records.get(spec.shot_id), verified) for spec in specs}


def shots_not_done(folder: Path, specs: list[RenderSpec], verified: VerifiedClips | None = None) -> list[RenderSpec]:
    records = load_records(folder)
    return [spec for spec in specs if not is_shot_done(folder, spec, records.get(spec.shot_id), verified)]


def with_continuations(specs: list[RenderSpec], todo: list[RenderSpec]) -> tuple[list[RenderSpec], dict[str, str]]:
    """`todo` and every shot that continues one of them (a chain renders again from where it changed), in plan
    order; with the reason for each shot added: the shot it continues."""
    wanted = {spec.shot_id for spec in todo}
    added: dict[str, str] = {}
    for spec in specs:
        carried = continues_from(spec)
        if spec.shot_id not in wanted and carried in wanted:
            wanted.add(spec.shot_id)
            added[spec.shot_id] = carried
    return [spec for spec in specs if spec.shot_id in wanted], added
