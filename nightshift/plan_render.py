"""`nightshift render PLAN`: a plan folder's shots rendered (all not done, or the ones named), then the cut.

The morning loop's second half: a delivery re-rendered in place (a shot marked to redo, an edited
shot list) renders only what changed, under the identity that signed it, and is finished again
(cut, timeline, signatures, record) with the change noted in its history. A new transition re-cuts
without rendering anything; a plan with shots still missing gets no cut, and says which are missing.
"""

from __future__ import annotations

from pathlib import Path

from nightshift.engine import NightEngine
from nightshift.errors import NightshiftError
from nightshift.files import now_utc, sha256_file
from nightshift.plan_files import SHOTLIST_JSON, load_plan_folder
from nightshift.planning_job import plan_from_shotlist
from nightshift.provenance import MANIFEST_JSON
from nightshift.records import load_records, shots_not_done
from nightshift.renderers.assemble import missing_shots
from nightshift.review import approved_shots
from nightshift.schemas import slugify
from nightshift.seal import check_same_signer, make_cut, reseal_delivery
from nightshift.steps import RenderResult


def render_plan_folder(engine: NightEngine, plan_folder: Path, shot_ids: list[str] | None = None,
                       out_dir: Path | None = None) -> RenderResult:
    """Render the shots of a plan folder (all not done, or `shot_ids`), then cut it again; a delivery
    re-rendered in place is sealed again with the change noted."""
    _, plan = load_plan_folder(plan_folder)
    edited = sha256_file(plan_folder / SHOTLIST_JSON) != plan.shotlist_sha256
    if edited:
        plan = plan_from_shotlist(plan_folder / SHOTLIST_JSON, engine.settings, source="nightshift render",
                                  storyboard=False).plan  # the cut writes it, with the frames as rendered
        engine.say("shotlist.json was edited: render plan rebuilt; shots whose spec changed will render again")
    folder = out_dir or plan_folder
    check_same_signer(folder, engine.settings)
    known = {s.shot_id: s for s in plan.specs}
    unknown = [i for i in shot_ids or [] if i not in known]
    if unknown:
        raise NightshiftError(f"{plan_folder}: no shot {', '.join(unknown)} in this plan",
                              f"shot ids look like {plan.specs[0].shot_id}; see shotlist.md")
    specs = [known[i] for i in shot_ids] if shot_ids else shots_not_done(folder, plan.specs)
    approved = approved_shots(engine.settings, folder, [s.shot_id for s in specs])
    if approved:  # named, or edited in shotlist.json since it was approved
        raise NightshiftError(f"{folder}: {', '.join(approved)} approved in review; an approved shot is not rendered again",
                              f"withdraw the approval first: nightshift mark {folder} {' '.join(approved)} --withdraw")
    choice = engine.choose(plan)
    engine.say(f"renderer: {choice.kind} ({choice.reason})")
    with engine.steps.gpu(engine, choice.device):
        if engine.shots.render(plan_folder, folder, plan, choice, specs=specs) == "stopped":
            raise NightshiftError("stopped before every shot was rendered", "run the same command again to go on")
    records = load_records(folder)
    rendered = [records[s.shot_id] for s in plan.specs if s.shot_id in records]
    missing = missing_shots(folder, plan) or [s.shot_id for s in shots_not_done(folder, plan.specs)]
    if missing:  # a cut of some shots would look finished: none is made until every shot exists
        engine.say(f"no cut: shots {', '.join(missing)} are not rendered yet; render them with "
                   f"nightshift render {folder} --shots {','.join(missing)} (or without --shots for all)")
        return RenderResult(folder, rendered, None, missing)
    cut = folder / f"{slugify(plan.title)}.mp4"
    if not specs and not edited and cut.is_file():
        engine.say(f"{plan.title}: every shot is rendered and the cut is up to date; nothing to do")
        return RenderResult(folder, rendered, cut)
    sealing = (folder / MANIFEST_JSON).is_file()
    report = engine.finishing(None, folder, plan, sealing)
    if sealing:
        what = (f"re-rendered {', '.join(s.shot_id for s in specs)} with {choice.kind}" if specs
                else "no shot re-rendered")
        reseal_delivery(folder, f"{now_utc()} {what}; cut re-assembled", engine.settings, report)
    else:
        make_cut(folder, engine.settings, report)
    work = folder / ".work"
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    records = load_records(folder)  # sealing signs any shot rendered while signing was off
    return RenderResult(folder, [records[s.shot_id] for s in plan.specs], cut)
