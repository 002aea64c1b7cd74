"""Assembly: shots joined into one cut in shot-list order, streaming through PyAV.

Cuts by default; a crossfade where a shot's transition asks for one (only the
overlapping frames are held), a fade to black where it asks for a fade out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from nightshift.schemas import Transition
from renderers.encode import EncodeSettings, encode_frames

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


def _cut_frames(entries: Sequence[CutEntry], rate: Fraction) -> Iterator[np.ndarray]:
    overlap = max(1, round(CROSSFADE_S * rate))
    fade = max(1, round(FADE_S * rate))
    carried: list[np.ndarray] = []  # the tail of the previous clip, for a crossfade
    for position, entry in enumerate(entries):
        frames = _decode(entry.clip)
        for index, previous in enumerate(carried):
            current = next(frames, None)
            if current is None:
                break
            alpha = (index + 1) / (len(carried) + 1)
            yield (previous * (1 - alpha) + current * alpha).astype(np.uint8)
        carried = []
        last_clip = position == len(entries) - 1
        hold = overlap if entry.transition is Transition.crossfade and not last_clip else 0
        hold = fade if entry.transition is Transition.fade_out else hold
        tail: deque[np.ndarray] = deque(maxlen=hold or None)
        for frame in frames:
            if hold:
                if len(tail) == hold:
                    yield tail[0]
                tail.append(frame)
            else:
                yield frame
        if entry.transition is Transition.fade_out:
            for index, frame in enumerate(tail):
                yield (frame * (1 - (index + 1) / len(tail))).astype(np.uint8)
        elif hold:
            carried = list(tail)
    yield from carried


def assemble_cut(entries: Sequence[CutEntry], final: Path, encode: EncodeSettings = EncodeSettings()) -> int:
    """Join clips (same size and rate) into `final`. Returns the number of frames in the cut."""
    if not entries:
        raise ValueError("nothing to assemble: no clips")
    rate = _clip_rate(entries[0].clip)
    for entry in entries[1:]:
        if _clip_rate(entry.clip) != rate:
            raise ValueError(f"{entry.clip.name} runs at {_clip_rate(entry.clip)} fps, the cut at {rate}: render at one rate")
    return encode_frames(_cut_frames(entries, rate), final, rate, encode)
