"""Assembly: shots joined into one cut in shot-list order, streaming through PyAV.

Cuts by default; a crossfade where a shot's transition asks for one (only the
overlapping frames are held), a fade to black where it asks for a fade out.
When any shot has sound (LTX-2), the cut gets one AAC track: each shot's audio
placed where its pictures start, silence under silent shots, crossfaded with the
pictures. Audio is read one shot at a time, after the pictures are encoded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from nightshift.schemas import RenderPlan, Transition, slugify
from nightshift.renderers.encode import EncodeSettings, encode_frames

CROSSFADE_S = 0.5
FADE_S = 0.75


@dataclass(frozen=True)
class CutEntry:
    clip: Path
    transition: Transition  # how this clip leaves for the next


def _decode(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _clip_rate(path: Path) -> Fraction:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return Fraction(stream.average_rate or stream.guessed_rate)


@dataclass
class _Placement:
    """Where a clip's pictures landed in the cut, filled in while the cut's frames are produced."""

    start: int = 0  # the cut frame where the clip's first frame shows
    frames: int = 0  # the clip's own frame count


def _counted(frames: Iterator[np.ndarray], placement: _Placement) -> Iterator[np.ndarray]:
    for frame in frames:
        placement.frames += 1
        yield frame


def _cut_frames(entries: Sequence[CutEntry], rate: Fraction,
                placements: list[_Placement] | None = None) -> Iterator[np.ndarray]:
    overlap = max(1, round(CROSSFADE_S * rate))
    fade = max(1, round(FADE_S * rate))
    carried: list[np.ndarray] = []  # the tail of the previous clip, for a crossfade
    emitted = 0
    for position, entry in enumerate(entries):
        placement = _Placement(start=emitted)
        if placements is not None:
            placements.append(placement)
        frames = _counted(_decode(entry.clip), placement)
        for index, previous in enumerate(carried):
            current = next(frames, None)
            if current is None:
                break
            alpha = (index + 1) / (len(carried) + 1)
            emitted += 1
            yield (previous * (1 - alpha) + current * alpha).astype(np.uint8)
        carried = []
        last_clip = position == len(entries) - 1
        hold = overlap if entry.transition is Transition.crossfade and not last_clip else 0
        hold = fade if entry.transition is Transition.fade_out else hold
        tail: deque[np.ndarray] = deque(maxlen=hold or None)
        for frame in frames:
            if hold:
                if len(tail) == hold:
                    emitted += 1
                    yield tail[0]
                tail.append(frame)
            else:
                emitted += 1
                yield frame
        if entry.transition is Transition.fade_out:
            for index, frame in enumerate(tail):
                emitted += 1
                yield (frame * (1 - (index + 1) / len(tail))).astype(np.uint8)
        elif hold:
            carried = list(tail)
    yield from carried


def _audio_format(entries: Sequence[CutEntry]) -> tuple[int, int] | None:
    """(sample rate, channels) of the first clip with sound, or None when every clip is silent."""
    for entry in entries:
        with av.open(str(entry.clip)) as container:
            if container.streams.audio:
                stream = container.streams.audio[0]
                return stream.rate, min(2, stream.codec_context.channels)
    return None


def _decode_audio(path: Path, sample_rate: int, channels: int) -> np.ndarray | None:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="fltp", layout="mono" if channels == 1 else "stereo", rate=sample_rate)
        blocks = [out.to_ndarray() for frame in container.decode(audio=0) for out in resampler.resample(frame)]
        blocks += [out.to_ndarray() for out in resampler.resample(None)]
    return np.concatenate(blocks, axis=1) if blocks else None


def _cut_audio(entries: Sequence[CutEntry], placements: list[_Placement], total_frames: list[int], rate: Fraction,
               sample_rate: int, channels: int) -> Iterator[np.ndarray]:
    """The cut's sound, clip by clip; called after the pictures, when every placement is known."""
    to_samples = lambda frames: round(frames * sample_rate / rate)  # noqa: E731
    written, pending = 0, np.zeros((channels, 0), np.float32)  # `pending` starts at sample `written`
    for entry, placement in zip(entries, placements):
        length = to_samples(placement.frames)
        sound = _decode_audio(entry.clip, sample_rate, channels)
        block = np.zeros((channels, length), np.float32)
        if sound is not None:
            block[:, :min(length, sound.shape[1])] = sound[:, :length]
        start = to_samples(placement.start)
        if start >= written + pending.shape[1]:
            yield pending
            yield np.zeros((channels, start - written - pending.shape[1]), np.float32)
        else:  # a crossfade: the previous clip's tail and this clip's head overlap
            keep = start - written
            yield pending[:, :keep]
            tail = pending[:, keep:]
            ramp = np.linspace(0.0, 1.0, tail.shape[1], dtype=np.float32)
            mixed = min(tail.shape[1], block.shape[1])
            block[:, :mixed] = tail[:, :mixed] * (1 - ramp[:mixed]) + block[:, :mixed] * ramp[:mixed]
        written, pending = start, block
    end = to_samples(total_frames[0])
    yield pending[:, :max(0, end - written)]
    if end > written + pending.shape[1]:
        yield np.zeros((channels, end - written - pending.shape[1]), np.float32)


def assemble_cut(entries: Sequence[CutEntry], final: Path, encode: EncodeSettings = EncodeSettings()) -> int:
    """Join clips (same size and rate) into `final`. Returns the number of frames in the cut."""
    if not entries:
        raise ValueError("nothing to assemble: no clips")
    rate = _clip_rate(entries[0].clip)
    for entry in entries[1:]:
        if _clip_rate(entry.clip) != rate:
            raise ValueError(f"{entry.clip.name} runs at {_clip_rate(entry.clip)} fps, the cut at {rate}: render at one rate")
    placements: list[_Placement] = []
    total: list[int] = []  # the cut's frame count, known once the pictures are done
    audio_format = _audio_format(entries)

    def pictures() -> Iterator[np.ndarray]:
        count = 0
        for frame in _cut_frames(entries, rate, placements):
            count += 1
            yield frame
        total.append(count)

    if audio_format is None:
        return encode_frames(pictures(), final, rate, encode)
    sample_rate, channels = audio_format
    return encode_frames(pictures(), final, rate, encode, sample_rate=sample_rate, channels=channels,
                         audio=_cut_audio(entries, placements, total, rate, sample_rate, channels))


def assemble_folder(folder: Path, plan: RenderPlan, encode: EncodeSettings = EncodeSettings()) -> Path:
    """Join every rendered shot of `plan` found in folder/shots into <slug>.mp4, in shot-list order."""
    shots_dir = folder / "shots"
    entries = [CutEntry(shots_dir / f"{spec.shot_id}.mp4", spec.transition) for spec in plan.specs
               if (shots_dir / f"{spec.shot_id}.mp4").exists()]
    cut = folder / f"{slugify(plan.title)}.mp4"
    assemble_cut(entries, cut, encode)
    return cut
