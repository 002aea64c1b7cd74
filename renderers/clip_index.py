"""What joining needs to know about a clip, read from its packets without decoding: frame count, keyframes,
timing, codec parameters, and a digest of the packets (what a cached transition run made from it depends on)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from nightshift.renderers.encode import exact_rate


@dataclass(frozen=True)
class ClipIndex:
    """What the cut needs to know about one clip, read from its packets (nothing decoded)."""

    path: Path
    frames: int
    keyframes: tuple[int, ...]  # frame numbers of its keyframes, in order
    rate: Fraction
    tick: int  # one frame, in the stream's time base
    first_pts: int
    regular: bool  # every frame exactly one tick after the last: its packets can be copied
    codec: str
    size: tuple[int, int]
    extradata: bytes
    digest: str  # sha256 of its video packets: what a cached run made from it depends on
    has_audio: bool
    decode_order: tuple[int, ...] = ()  # frame numbers in the order the packets are stored (decoded)

    def lead(self, start: int, end: int) -> int:
        """How many frames the decode order of frames [start, end) runs ahead of their display order at most
        (B-frames: usually 2). The span starts at a keyframe, so this is the span's own reordering depth."""
        inside = [frame - start for frame in self.decode_order if start <= frame < end]
        return max([position - frame for position, frame in enumerate(inside)] + [0])

    def joins(self, other: ClipIndex) -> str | None:
        """Why `other`'s packets cannot follow this clip's in one stream, or None when they can."""
        for what, mine, theirs in (("codec", self.codec, other.codec), ("size", self.size, other.size),
                                   ("frame rate", self.rate, other.rate)):
            if mine != theirs:
                return f"{other.path.name} has {what} {theirs}, {self.path.name} {mine}"
        if not other.regular:
            return f"{other.path.name} has irregular frame timing"
        if self.extradata != other.extradata:
            return f"{other.path.name} was encoded with other settings than {self.path.name}"
        return None


def index_clip(path: Path) -> ClipIndex:
    digest, stamps, keys = hashlib.sha256(), [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = exact_rate(Fraction(stream.average_rate or stream.guessed_rate))
        exact_tick = 1 / (rate * stream.time_base)
        for packet in container.demux(stream):
            if packet.pts is None:
                continue  # the demuxer's end-of-stream marker
            digest.update(bytes(packet))
            stamps.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
        context = stream.codec_context
        codec, size, extradata = context.name, (context.width, context.height), bytes(context.extradata or b"")
        has_audio = bool(container.streams.audio)
    if not stamps:
        raise ValueError(f"{path.name}: no video frames")
    first, tick = min(stamps), max(1, round(exact_tick))
    regular = exact_tick.denominator == 1 and sorted(stamps) == list(range(first, first + tick * len(stamps), tick))
    keyframes = tuple(sorted((k - first) // tick for k in keys)) if regular else (0,)
    order = tuple((stamp - first) // tick for stamp in stamps) if regular else ()
    return ClipIndex(path, len(stamps), keyframes, rate, tick, first, regular, codec, size, extradata,
                     digest.hexdigest(), has_audio, order)
