"""The cut's sound (LTX-2 shots have audio): one AAC track, encoded whole, placed shot by shot.

Each shot's sound sits under its pictures, silence under silent shots, and a crossfade mixes the
two shots' sound over the same frames as the pictures. It is encoded whole rather than stream
copied: each shot's AAC priming would click at a copied join. renderers/assemble.py feeds it to
the muxer as the pictures go, so the file interleaves sound and pictures shot by shot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
import av
import numpy as np

from nightshift.renderers.clip_index import ClipIndex
from nightshift.renderers.encode import AudioTrack
from nightshift.renderers.transitions import ShotPlacement


def audio_format(clips: Sequence[ClipIndex]) -> tuple[int, int] | None:
    """(sample rate, channels) of the first clip with sound, or None when every clip is silent."""
    for clip in clips:
        if clip.has_audio:
            with av.open(str(clip.path)) as container:
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


def cut_sound(clips: Sequence[ClipIndex], placements: Sequence[ShotPlacement], rate: Fraction, sample_rate: int,
               channels: int) -> Iterator[np.ndarray]:
    """The cut's sound, clip by clip, in order."""
    to_samples = lambda frames: round(frames * sample_rate / rate)  # noqa: E731
    written, pending = 0, np.zeros((channels, 0), np.float32)  # `pending` starts at sample `written`
    for clip, place in zip(clips, placements):
        length = to_samples(place.frames)
        sound = _decode_audio(clip.path, sample_rate, channels) if clip.has_audio else None
        block = np.zeros((channels, length), np.float32)
        if sound is not None:
            block[:, :min(length, sound.shape[1])] = sound[:, :length]
        start = to_samples(place.start)
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
    end = to_samples(placements[-1].end)
    yield pending[:, :max(0, end - written)]


def feed_until(track: AudioTrack, sound: Iterator[np.ndarray], samples: int) -> None:
    while track.written < samples:
        block = next(sound, None)
        if block is None:
            return
        track.add(block)
