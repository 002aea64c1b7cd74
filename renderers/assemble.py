"""Assembly: shots joined into one cut in shot-list order, by stream copy.

Every shot is encoded once, at the delivery's format, with an IDR keyframe wherever a
transition may start or end (renderers/transitions.py). The cut copies each shot's packets
as they are and re-encodes only what it must: the frames of a crossfade or a fade out (and,
for a clip without those keyframes, the frames up to its nearest keyframe). Those runs are
encoded with the delivery's settings, so every packet shares one set of parameter sets, and
cached under the folder's `.work/cut-runs/` by the packets that went into them: re-cutting
after one shot changed re-encodes only the transitions next to it. Clips that cannot be
joined that way (another codec, size, rate or encoder setting) make the whole cut re-encoded,
and the report says why. Frames stay YUV throughout.

Sound (LTX-2): when any shot has audio, the cut gets one AAC track (renderers/cut_sound.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av

from nightshift.errors import NightshiftError
from nightshift.files import atomic_output
from nightshift.renderers.encode import (AudioTrack, EncodeSettings, add_audio_stream, encode_pictures,
                                         open_mp4)
from nightshift.renderers.clip_index import ClipIndex, index_clip
from nightshift.renderers.cut_sound import audio_format, cut_sound, feed_until
from nightshift.renderers.transitions import ShotPlacement, darken, mix, place_shots
from nightshift.schemas import RenderPlan, Transition, slugify

RUNS_FORMAT = 1  # part of every cached run's key: bump when how runs are made changes
RUNS_KEPT_DAYS = 30
CODEC_NAMES = {"libx264": "h264", "libx265": "hevc"}
Progress = Callable[[int, int, str], None]  # (done, total, what)


@dataclass(frozen=True)
class CutEntry:
    clip: Path
    transition: Transition  # how this clip leaves for the next


# --------------------------------------------------------------------------- what is copied, what is encoded


@dataclass(frozen=True)
class Copy:
    clip: int
    start: int
    end: int


@dataclass(frozen=True)
class Plain:
    """Frames [start, end) of a clip, decoded and encoded again as they are."""

    clip: int
    start: int
    end: int


@dataclass(frozen=True)
class Blend:
    """`frames` frames of a clip from `start`, crossfaded into the next clip's first (`into`) or faded to black."""

    clip: int
    start: int
    into: int | None
    frames: int


@dataclass(frozen=True)
class FadeIn:
    """A clip's first `frames` frames, brought up from black."""

    clip: int
    frames: int


Run = tuple[Plain | Blend | FadeIn, ...]


def plan_segments(clips: Sequence[ClipIndex], placements: Sequence[ShotPlacement], copy: bool) -> list[Copy | Run]:
    """The cut as copied spans and encoded runs, in order. A span is copied from a keyframe to a keyframe
    (or the clip's end), so it decodes alone; everything else joins the run around it."""
    segments: list[Copy | Run] = []
    run: list[Plain | Blend | FadeIn] = []
    for index, (clip, place) in enumerate(zip(clips, placements)):
        if place.fades_in:
            run.append(FadeIn(index, place.fades_in))
        shown_start, shown_end = max(place.head, place.fades_in), place.frames - place.tail
        first = last = None
        if copy:
            first = next((k for k in clip.keyframes if k >= shown_start), None)
            last = place.frames if not place.tail else max((k for k in clip.keyframes if k <= shown_end), default=None)
        if first is not None and last is not None and first < last:
            if shown_start < first:
                run.append(Plain(index, shown_start, first))
            if run:
                segments.append(tuple(run))
                run = []
            segments.append(Copy(index, first, last))
            if last < shown_end:
                run.append(Plain(index, last, shown_end))
        elif shown_start < shown_end:
            run.append(Plain(index, shown_start, shown_end))
        if place.tail:
            into = index + 1 if place.leaves_by is Transition.crossfade else None
            run.append(Blend(index, shown_end, into, place.tail))
    if run:
        segments.append(tuple(run))
    return segments


def _run_length(run: Run) -> int:
    return sum(part.end - part.start if isinstance(part, Plain) else part.frames for part in run)


def _span(part: Plain | Blend | FadeIn) -> tuple[int, int]:
    """(first frame, frame count) of the part's own clip."""
    if isinstance(part, Plain):
        return part.start, part.end - part.start
    return (part.start if isinstance(part, Blend) else 0), part.frames


def _decode_range(clip: ClipIndex, start: int, end: int) -> Iterator[av.VideoFrame]:
    """Frames [start, end) of a clip, decoding from the keyframe at or before `start`."""
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        if start and clip.regular:
            container.seek(clip.first_pts + start * clip.tick, stream=stream, backward=True)
        counted = 0
        for frame in container.decode(stream):
            number = (frame.pts - clip.first_pts) // clip.tick if clip.regular else counted
            counted += 1
            if number >= end:
                return
            if number >= start:
                yield frame


def _run_frames(clips: Sequence[ClipIndex], run: Run) -> Iterator[av.VideoFrame]:
    for part in run:
        if isinstance(part, Plain):
            yield from _decode_range(clips[part.clip], part.start, part.end)
            continue
        if isinstance(part, FadeIn):
            for number, frame in enumerate(_decode_range(clips[part.clip], 0, part.frames)):
                yield darken(frame, 1 - (number + 1) / part.frames)
            continue
        outgoing = _decode_range(clips[part.clip], part.start, part.start + part.frames)
        if part.into is None:
            for number, frame in enumerate(outgoing):
                yield darken(frame, (number + 1) / part.frames)
        else:
            incoming = _decode_range(clips[part.into], 0, part.frames)
            for number, (leaving, arriving) in enumerate(zip(outgoing, incoming)):
                yield mix(leaving, arriving, (number + 1) / (part.frames + 1))


def _run_key(clips: Sequence[ClipIndex], run: Run, encode: EncodeSettings) -> str:
    parts = [[type(part).__name__, clips[part.clip].digest, *_span(part),
              clips[part.into].digest if isinstance(part, Blend) and part.into is not None else None] for part in run]
    text = json.dumps({"format": RUNS_FORMAT, "encode": asdict(encode), "parts": parts}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


# --------------------------------------------------------------------------- the cut


@dataclass
class CutReport:
    """How a cut was made: what was copied, what encoded, and why the whole cut was encoded if it was."""

    frames: int = 0
    copied_frames: int = 0
    encoded_frames: int = 0
    runs: int = 0
    runs_reused: int = 0
    reencoded_because: str | None = None
    seconds: float = 0.0
    encode: dict[str, object] = field(default_factory=dict)

    def describe(self) -> str:
        how = (f"re-encoded whole ({self.reencoded_because})" if self.reencoded_because else
               f"{self.copied_frames} frames copied, {self.encoded_frames} encoded in {self.runs} transition runs"
               f" ({self.runs_reused} reused)")
        return f"{self.frames} frames: {how}, {self.seconds:.1f} s"


def assemble_cut(entries: Sequence[CutEntry], final: Path, encode: EncodeSettings = EncodeSettings(),
                 runs_dir: Path | None = None, progress: Progress | None = None) -> CutReport:
    """`runs_dir`: where transition runs are cached (default: a `.cut-runs` folder beside `final`)."""
    """Join clips (same size and rate) into `final`, copying every frame that need not change."""
    if not entries:
        raise ValueError("nothing to assemble: no clips")
    started = time.perf_counter()
    clips = [index_clip(entry.clip) for entry in entries]
    rate = clips[0].rate
    for clip in clips[1:]:
        if clip.rate != rate:
            raise ValueError(f"{clip.path.name} runs at {clip.rate} fps, the cut at {rate}: render at one rate")
    placements = place_shots([c.frames for c in clips], [e.transition for e in entries], rate)
    runs_dir = runs_dir or final.parent / ".cut-runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    report = CutReport(encode=asdict(encode))
    reason = _why_not_copied(clips, encode)
    segments = plan_segments(clips, placements, copy=reason is None)
    sources = _encode_runs(clips, segments, encode, runs_dir, report, progress)
    if reason is None:
        reason = next((why for source in sources if (why := clips[0].joins(source[0])) is not None), None)
        if reason is not None:  # a run encoded now does not match the shots: the configuration changed
            segments = plan_segments(clips, placements, copy=False)
            report = CutReport(encode=asdict(encode))
            sources = _encode_runs(clips, segments, encode, runs_dir, report, progress)
    report.reencoded_because = reason
    audio = audio_format(clips)
    _write_cut(final, sources, placements, clips, audio)
    _prune(runs_dir)
    report.frames = placements[-1].end
    report.copied_frames = sum(s.end - s.start for s in segments if isinstance(s, Copy))
    report.encoded_frames = report.frames - report.copied_frames
    report.seconds = time.perf_counter() - started
    return report


def _prune(runs_dir: Path) -> None:
    cutoff = time.time() - RUNS_KEPT_DAYS * 86400
    for run in runs_dir.glob("*.mp4"):
        try:
            if run.stat().st_mtime < cutoff:
                run.unlink()
        except FileNotFoundError:
            pass  # another cut pruned it first


def _why_not_copied(clips: Sequence[ClipIndex], encode: EncodeSettings) -> str | None:
    wanted = CODEC_NAMES[encode.codec]
    if clips[0].codec != wanted:
        return f"the shots are {clips[0].codec} and render.codec asks for {wanted}"
    return next((why for clip in clips if (why := clips[0].joins(clip)) is not None), None)


def _encode_runs(clips: Sequence[ClipIndex], segments: Sequence[Copy | Run], encode: EncodeSettings, runs_dir: Path,
                 report: CutReport, progress: Progress | None) -> list[tuple[ClipIndex, int, int]]:
    """Each segment as (clip to copy from, first frame, end frame); runs are encoded (or found cached) first."""
    runs = [segment for segment in segments if not isinstance(segment, Copy)]
    sources: list[tuple[ClipIndex, int, int]] = []
    for segment in segments:
        if isinstance(segment, Copy):
            sources.append((clips[segment.clip], segment.start, segment.end))
            continue
        path = runs_dir / f"{_run_key(clips, segment, encode)}.mp4"
        report.runs += 1
        if path.is_file():
            report.runs_reused += 1
            os.utime(path)  # in use: kept by _prune
        else:
            written = encode_pictures(_run_frames(clips, segment), path, clips[0].rate, encode)
            if written != _run_length(segment):
                path.unlink(missing_ok=True)
                raise ValueError(f"a transition run made {written} frames where {_run_length(segment)} were due")
        if progress is not None:
            progress(report.runs, len(runs), "transitions encoded")
        run = index_clip(path)
        sources.append((run, 0, run.frames))
    return sources


def _write_cut(final: Path, sources: Sequence[tuple[ClipIndex, int, int]], placements: Sequence[ShotPlacement],
               clips: Sequence[ClipIndex], audio: tuple[int, int] | None) -> None:
    first = sources[0][0]
    # One reordering depth for the whole cut, so decode times step one frame at a time across every join.
    lead = max(clip.lead(start, end) for clip, start, end in sources)
    with atomic_output(final) as tmp, open_mp4(tmp, first.rate) as out, av.open(str(first.path)) as template:
        video = out.add_stream_from_template(template.streams.video[0])
        video.codec_tag = template.streams.video[0].codec_tag  # hvc1 stays hvc1 (the template leaves it out)
        sound = None
        if audio is not None:
            sample_rate, channels = audio
            track = AudioTrack(out, add_audio_stream(out, channels, sample_rate))
            sound = cut_sound(clips, placements, first.rate, sample_rate, channels)
        position = 0  # cut frames written so far
        for clip, start, end in sources:
            _copy_packets(out, video, clip, start, end, position, lead)
            position += end - start
            if sound is not None:
                feed_until(track, sound, round(position * sample_rate / first.rate))
        if sound is not None:
            for block in sound:
                track.add(block)
            track.close()


def _copy_packets(out: av.container.OutputContainer, video: av.video.stream.VideoStream, clip: ClipIndex,
                  start: int, end: int, position: int, lead: int) -> None:
    """Frames [start, end) of a clip, packets as they are, shown from cut frame `position`: each packet's
    display time moves with it, its decode time is its place in the cut's decode order less `lead` frames."""
    low, high = clip.first_pts + start * clip.tick, clip.first_pts + end * clip.tick
    decoded = position - lead
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is None or not low <= packet.pts < high:
                continue
            packet.pts = (packet.pts - low) + position * clip.tick
            packet.dts = decoded * clip.tick
            packet.duration = clip.tick
            packet.stream = video
            out.mux(packet)
            decoded += 1


# --------------------------------------------------------------------------- a delivery folder


def missing_shots(folder: Path, plan: RenderPlan) -> list[str]:
    return [spec.shot_id for spec in plan.specs if not (folder / "shots" / f"{spec.shot_id}.mp4").is_file()]


def assemble_folder(folder: Path, plan: RenderPlan, encode: EncodeSettings, runs_dir: Path,
                    progress: Progress | None = None) -> tuple[Path, CutReport]:
    """Join every shot of `plan` (all must be in folder/shots) into <slug>.mp4, in shot-list order."""
    missing = missing_shots(folder, plan)
    if missing:
        raise NightshiftError(f"{folder}: shots {', '.join(missing)} are not rendered, so no cut was made",
                              f"render them: nightshift render {folder} --shots {','.join(missing)}")
    entries = [CutEntry(folder / "shots" / f"{spec.shot_id}.mp4", spec.transition) for spec in plan.specs]
    cut = folder / f"{slugify(plan.title)}.mp4"
    return cut, assemble_cut(entries, cut, encode, runs_dir, progress)
