"""Transitions between shots: how long each lasts, where a shot needs keyframes for them, and the blends.

A crossfade overlaps the last CROSSFADE_S of one shot with the first CROSSFADE_S of the
next; a fade out darkens the last FADE_S of a shot to black; a fade in brings the next shot's
first FADE_S up from black. None adds or removes time but the crossfade's overlap. Every shot is encoded with an
IDR keyframe at each point where a transition could start or end (`edit_points`), whatever
its neighbours are, so the cut can copy everything else and re-encode only the transition's
own frames, and changing one shot's transition never means re-rendering another shot.

Blends work on the decoded YUV planes (a linear mix of Y, Cb and Cr is the same mix of the
pictures), so no frame goes through RGB and back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from nightshift.schemas import Transition

CROSSFADE_S = 0.5
FADE_S = 0.75
# Limited-range (BT.709 "tv") black in 8-bit Y, Cb, Cr.
BLACK_Y, BLACK_C = 16, 128


def crossfade_frames(rate: Fraction) -> int:
    return max(1, round(CROSSFADE_S * rate))


def fade_frames(rate: Fraction) -> int:
    return max(1, round(FADE_S * rate))


def edit_points(frames: int, rate: Fraction) -> set[int]:
    """Frame indices (other than 0) where a shot of `frames` frames starts a GOP, for any transition in or out."""
    points = {crossfade_frames(rate), fade_frames(rate), frames - crossfade_frames(rate), frames - fade_frames(rate)}
    return {point for point in points if 0 < point < frames}


@dataclass(frozen=True)
class ShotPlacement:
    """Where one shot sits in the cut."""

    frames: int  # the clip's own frame count
    start: int  # the cut frame where its first frame shows
    head: int  # its first frames, blended with the previous shot's last (a crossfade in)
    tail: int  # its last frames, blended with the next shot's first or faded to black
    leaves_by: Transition  # how it leaves, as made: a crossfade out of the last shot is a cut
    fades_in: int = 0  # its first frames, brought up from black (the previous shot left by a fade in)

    @property
    def end(self) -> int:
        return self.start + self.frames


def place_shots(frames: Sequence[int], transitions: Sequence[Transition], rate: Fraction) -> list[ShotPlacement]:
    """The layout of a cut: shots in order, a crossfade overlapping two shots, a fade out darkening one.
    A transition longer than a shot allows is shortened to what the shot has."""
    placements: list[ShotPlacement] = []
    start = head = fades_in = 0
    for index, (count, transition) in enumerate(zip(frames, transitions)):
        last = index == len(frames) - 1
        taken = max(head, fades_in)  # frames at its start that the way in already uses
        if transition is Transition.crossfade and not last:
            tail = min(crossfade_frames(rate), count - taken, frames[index + 1])
        elif transition is Transition.fade_out:
            tail = min(fade_frames(rate), count - taken)
        else:
            tail = 0
        fade_next = min(fade_frames(rate), frames[index + 1]) if transition is Transition.fade_in and not last else 0
        leaves_by = transition if tail or fade_next else Transition.cut
        placements.append(ShotPlacement(count, start, head, tail, leaves_by, fades_in))
        overlap = tail if leaves_by is Transition.crossfade else 0
        start, head, fades_in = start + count - overlap, overlap, fade_next
    return placements


def _planes(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    return frame.to_ndarray().astype(np.float32)


def _frame(planes: np.ndarray, like: av.VideoFrame) -> av.VideoFrame:
    out = av.VideoFrame.from_ndarray(np.clip(planes + 0.5, 0, 255).astype(np.uint8), format="yuv420p")
    out.colorspace, out.color_range = like.colorspace, like.color_range
    return out


def mix(outgoing: av.VideoFrame, incoming: av.VideoFrame, weight: float) -> av.VideoFrame:
    """`weight` of `incoming` over 1 - weight of `outgoing`."""
    return _frame(_planes(outgoing) * (1.0 - weight) + _planes(incoming) * weight, incoming)


def darken(frame: av.VideoFrame, weight: float) -> av.VideoFrame:
    """The frame faded `weight` of the way to black."""
    planes = _planes(frame)
    black = np.full_like(planes, BLACK_C)
    black[: frame.height] = BLACK_Y
    return _frame(planes * (1.0 - weight) + black * weight, frame)
