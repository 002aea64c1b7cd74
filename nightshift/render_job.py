"""The render job as plain functions: a plan folder -> 4K shot clips, a cut and a record of each clip."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from nightshift.errors import NightshiftError
from nightshift.plan_files import RENDERPLAN_JSON, SHOTLIST_JSON, load_renderplan, load_shotlist, write_atomic
from nightshift.schemas import RenderSpec, Shot, slugify
from renderers.animatic import AnimaticRenderer
from renderers.assemble import CutEntry, assemble_cut
from renderers.encode import EncodeSettings, encode_frames
from renderers.upscale import UpscaleSettings, upscale_to_4k

RENDERS_JSON = "renders.json"


class ClipRecord(BaseModel):
    shot_id: str
    backend: str
    animatic: bool
    model_id: str | None
    tier: str
    device: str
    width: int
    height: int
    fps: float
    frames: int
    upscaled_to: str
    file: str
    sha256: str
    started: str
    finished: str
    seconds: float


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RenderResult:
    folder: Path
    records: list[ClipRecord]
    cut: Path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def render_shot(shot: Shot, spec: RenderSpec, shots_dir: Path, work_dir: Path, upscale: UpscaleSettings,
                encode: EncodeSettings) -> ClipRecord:
    """Render one shot with the animatic backend, then upscale and encode it into shots/<id>.mp4."""
    renderer = AnimaticRenderer()
    started, t0 = _now(), time.perf_counter()
    native = work_dir / f"{spec.shot_id}.native.mp4"
    frames = encode_frames(renderer.frames(shot, spec), native, spec.fps, encode)
    final = shots_dir / f"{spec.shot_id}.mp4"
    upscale_to_4k(native, final, upscale, encode)
    native.unlink(missing_ok=True)
    return ClipRecord(
        shot_id=spec.shot_id, backend=renderer.name, animatic=True, model_id=None, tier="none (animatic)",
        device=f"cpu ({platform.machine()})", width=upscale.width, height=upscale.height, fps=spec.fps,
        frames=frames, upscaled_to=f"{upscale.width}x{upscale.height} {upscale.scaler} {upscale.fit}",
        file=f"shots/{final.name}", sha256=sha256_file(final), started=started, finished=_now(),
        seconds=round(time.perf_counter() - t0, 3),
    )


def render_plan_folder(plan_folder: Path, shot_ids: list[str] | None = None, out_dir: Path | None = None,
                       upscale: UpscaleSettings = UpscaleSettings(), encode: EncodeSettings = EncodeSettings(),
                       progress: Callable[[str], None] | None = None) -> RenderResult:
    """Render the shots of a plan folder (all, or `shot_ids`), then assemble every rendered shot into the cut."""
    shotlist, _ = load_shotlist(plan_folder / SHOTLIST_JSON)
    plan, _ = load_renderplan(plan_folder / RENDERPLAN_JSON)
    shots = {s.id: s for s in shotlist.shots}
    wanted = shot_ids or [spec.shot_id for spec in plan.specs]
    unknown = [i for i in wanted if i not in shots]
    if unknown:
        raise NightshiftError(f"{plan_folder}: no shot {', '.join(unknown)} in this plan",
                              f"shot ids look like {plan.specs[0].shot_id}; see shotlist.md")
    folder = out_dir or plan_folder
    shots_dir, work_dir = folder / "shots", folder / ".work"
    work_dir.mkdir(parents=True, exist_ok=True)
    records_path = folder / RENDERS_JSON
    records = {r["shot_id"]: ClipRecord.model_validate(r) for r in
               (json.loads(records_path.read_text())["clips"] if records_path.exists() else [])}
    for spec in plan.specs:
        if spec.shot_id not in wanted:
            continue
        if progress:
            progress(f"{spec.shot_id} render (animatic, {spec.num_frames} frames)")
        records[spec.shot_id] = render_shot(shots[spec.shot_id], spec, shots_dir, work_dir, upscale, encode)
        write_atomic(records_path, json.dumps({"clips": [r.model_dump() for r in records.values()]}, indent=2))
    entries = [CutEntry(shots_dir / f"{spec.shot_id}.mp4", spec.transition) for spec in plan.specs
               if (shots_dir / f"{spec.shot_id}.mp4").exists()]
    cut = folder / f"{slugify(plan.title)}.mp4"
    if progress:
        progress(f"assembling {len(entries)} shots into {cut.name}")
    assemble_cut(entries, cut, encode)
    if not any(work_dir.iterdir()):
        work_dir.rmdir()
    ordered = [records[s.shot_id] for s in plan.specs if s.shot_id in records]
    return RenderResult(folder, ordered, cut)
