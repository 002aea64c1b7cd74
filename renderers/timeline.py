"""The editorial timeline of a cut: OpenTimelineIO, and CMX 3600 EDL and FCP 7 XML through its adapters.

An editor opens the night's work in DaVinci Resolve, Premiere or Final Cut and finds the cut
as it was assembled: one clip per shot referencing shots/<id>.mp4, a crossfade as an OTIO
transition centred on the edit (each clip's hidden frames are its handles), a fade out as a
dissolve into black (a gap) and a fade in as one out of it, a marker at the start of each scene, and on every clip the
shot's id, prompt, seed and model as metadata. The layout is the assembly's own
(renderers/transitions.place_shots), so the timeline and the cut cannot disagree.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import opentimelineio as otio

from nightshift.files import atomic_output
from nightshift.renderers.transitions import place_shots
from nightshift.schemas import ClipRecord, RenderPlan, ShotList, Transition, slugify

TIMELINE_ADAPTERS = {".otio": "otio_json", ".edl": "cmx_3600", ".xml": "fcp_xml"}


def _time(frames: int, rate: float) -> otio.opentime.RationalTime:
    return otio.opentime.RationalTime(frames, rate)


def _range(start: int, frames: int, rate: float) -> otio.opentime.TimeRange:
    return otio.opentime.TimeRange(_time(start, rate), _time(frames, rate))


def build_timeline(shotlist: ShotList, plan: RenderPlan, records: dict[str, ClipRecord], rate: Fraction) -> otio.schema.Timeline:
    """The cut as an OTIO timeline (one video track), from the shots as rendered."""
    fps = float(rate)
    frames = [records[spec.shot_id].frames for spec in plan.specs]
    placements = place_shots(frames, [spec.transition for spec in plan.specs], rate)
    scenes = {scene.number: scene.heading for scene in shotlist.scenes}
    scene_of = {shot.id: shot.scene for shot in shotlist.shots}
    timeline = otio.schema.Timeline(name=plan.title)
    timeline.global_start_time = _time(0, fps)
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    timeline.tracks.append(track)
    enter, seen_scenes = 0, set()  # `enter`: the first source frame shown after the edit into this clip
    for spec, place in zip(plan.specs, placements):
        record = records[spec.shot_id]
        if place.fades_in:  # up from black: black (a gap) dissolving into the clip, whose first frames are the handle
            track.append(otio.schema.Gap(source_range=_range(0, place.fades_in, fps)))
            track.append(otio.schema.Transition(name="fade in",
                                                transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                                                in_offset=_time(place.fades_in, fps), out_offset=_time(0, fps)))
            enter = place.fades_in
        tail = place.tail
        before_edit = tail // 2 if place.leaves_by is Transition.crossfade else 0
        end = place.frames - tail + before_edit  # the source frame at the edit out of this clip
        clip = otio.schema.Clip(
            name=spec.shot_id,
            media_reference=otio.schema.ExternalReference(target_url=record.file,
                                                          available_range=_range(0, place.frames, fps)),
            source_range=_range(enter, end - enter, fps),
        )
        clip.metadata["nightshift"] = {"shot_id": spec.shot_id, "prompt": spec.prompt, "seed": spec.seed,
                                       "model": record.model_id or "animatic", "transition": place.leaves_by.value}
        scene = scene_of.get(spec.shot_id)
        if scene is not None and scene not in seen_scenes:
            seen_scenes.add(scene)
            clip.markers.append(otio.schema.Marker(name=scenes.get(scene, f"scene {scene}"),
                                                   marked_range=_range(enter, 1, fps),
                                                   color=otio.schema.MarkerColor.BLUE))
        track.append(clip)
        if place.leaves_by is Transition.crossfade:
            track.append(otio.schema.Transition(name="crossfade",
                                                transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                                                in_offset=_time(before_edit, fps), out_offset=_time(tail - before_edit, fps)))
            enter = before_edit  # the next clip's frame at the edit: its first frames are the handle
        elif place.leaves_by is Transition.fade_out:
            track.append(otio.schema.Transition(name="fade out",
                                                transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                                                in_offset=_time(0, fps), out_offset=_time(tail, fps)))
            track.append(otio.schema.Gap(source_range=_range(0, tail, fps)))
            enter = 0
        else:
            enter = 0
    return timeline


def smpte_rate(rate: Fraction) -> bool:
    """Whether SMPTE timecode (which an EDL and FCP 7 XML count in) has frames at `rate`."""
    return otio.opentime.RationalTime.is_smpte_timecode_rate(float(rate))


def write_timelines(folder: Path, shotlist: ShotList, plan: RenderPlan, records: dict[str, ClipRecord],
                    rate: Fraction) -> tuple[list[Path], list[str]]:
    """<slug>.otio, <slug>.edl and <slug>.xml beside the cut. Returns what was written, and what was not and why
    (an EDL and FCP 7 XML count in SMPTE timecode, which has no 16 fps, for instance)."""
    timeline = build_timeline(shotlist, plan, records, rate)
    written, skipped = [], []
    for suffix, adapter in TIMELINE_ADAPTERS.items():
        final = folder / f"{slugify(plan.title)}{suffix}"
        if suffix != ".otio" and not smpte_rate(rate):
            final.unlink(missing_ok=True)
            skipped.append(f"no {final.name} at {float(rate):g} fps: SMPTE timecode has no such rate (the .otio has "
                           "the timeline; render at 24, 25 or 30 fps for an EDL and FCP XML)")
            continue
        with atomic_output(final) as tmp:
            otio.adapters.write_to_file(timeline, str(tmp), adapter_name=adapter)
        written.append(final)
    return written, skipped
