"""Encoding frames to MP4 with PyAV: streaming, exact frame rates, atomic completion.

A clip is written under a temporary name in the target folder and renamed only
once the encoder has flushed, so a half-written file is never taken for a
finished clip; on any failure the partial file is removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from nightshift import faults
from nightshift.files import atomic_output



@dataclass(frozen=True)
class EncodeSettings:
    codec: str = "libx264"  # or "libx265" (HEVC)
    crf: int = 18
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"

    def __post_init__(self) -> None:
        if self.codec not in ("libx264", "libx265"):
            raise ValueError(f"codec {self.codec!r}: use libx264 (H.264) or libx265 (HEVC)")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf {self.crf} is outside 0-51")

    def describe(self) -> str:
        return f"{self.codec} crf {self.crf} preset {self.preset} {self.pix_fmt}"

    def options(self) -> dict[str, str]:
        options = {"crf": str(self.crf), "preset": self.preset}
        if self.codec == "libx265":
            options["x265-params"] = "log-level=error"
        return options


def exact_rate(fps: float | Fraction) -> Fraction:
    """24 -> 24/1; 23.976 -> 24000/1001; 29.97 -> 30000/1001."""
    if isinstance(fps, Fraction):
        return fps
    for base in (24, 30, 48, 60, 120):
        ntsc = Fraction(base * 1000, 1001)
        if abs(float(ntsc) - fps) < 0.0015:
            return ntsc
    return Fraction(fps).limit_denominator(1001)


def add_video_stream(container: av.container.OutputContainer, width: int, height: int, fps: float | Fraction,
                     settings: EncodeSettings) -> av.video.stream.VideoStream:
    if width % 2 or height % 2:
        raise ValueError(f"{width}x{height}: yuv420p needs even width and height")
    stream = container.add_stream(settings.codec, rate=exact_rate(fps), options=settings.options())
    stream.width, stream.height, stream.pix_fmt = width, height, settings.pix_fmt
    stream.time_base = 1 / exact_rate(fps)
    return stream


def add_audio_stream(container: av.container.OutputContainer, channels: int,
                     sample_rate: int) -> av.audio.stream.AudioStream:
    """An AAC stream for float audio with 1 or 2 channels; add it before muxing anything."""
    if channels not in (1, 2):
        raise ValueError(f"audio must have 1 or 2 channels, not {channels}")
    if sample_rate <= 0:
        raise ValueError(f"audio sample rate {sample_rate} must be positive")
    stream = container.add_stream("aac", rate=sample_rate, layout="mono" if channels == 1 else "stereo")
    stream.bit_rate = 192_000
    return stream


def write_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                audio: np.ndarray | Iterable[np.ndarray]) -> None:
    """Encode (channels, samples) float blocks in [-1, 1], one block or a stream of them, then flush."""
    chunk, written = 1024 * 16, 0
    for block in [audio] if isinstance(audio, np.ndarray) else audio:
        for start in range(0, block.shape[1], chunk):
            piece = np.ascontiguousarray(block[:, start:start + chunk], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=stream.layout.name)
            frame.sample_rate = stream.rate
            frame.pts = written
            written += piece.shape[1]
            container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def encode_frames(frames: Iterable[np.ndarray], final: Path, fps: float | Fraction,
                  settings: EncodeSettings = EncodeSettings(), audio: np.ndarray | Iterable[np.ndarray] | None = None,
                  sample_rate: int | None = None, channels: int | None = None) -> int:
    """Encode RGB uint8 frames (H, W, 3), one at a time, into `final`, with an AAC track when `audio` is
    given as (channels, samples) floats, whole or as a stream of blocks. Returns the frame count."""
    if audio is not None:
        channels = audio.shape[0] if isinstance(audio, np.ndarray) and audio.ndim == 2 else channels
        if channels is None:
            raise ValueError("streamed audio needs its channel count")
    count = 0
    with atomic_output(final) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = None
            for array in frames:
                if stream is None:
                    height, width = array.shape[:2]
                    stream = add_video_stream(container, width, height, fps, settings)
                    if audio is not None:
                        audio_stream = add_audio_stream(container, channels, sample_rate or 0)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                frame.pts = count
                container.mux(stream.encode(frame))
                count += 1
                faults.reached("encode")
            if stream is None:
                raise ValueError(f"{final.name}: no frames to encode")
            container.mux(stream.encode(None))
            if audio is not None:
                write_audio(container, audio_stream, audio)
    return count


@dataclass(frozen=True)
class ClipInfo:
    width: int
    height: int
    frames: int
    fps: Fraction
    duration_s: float
    codec: str
    has_audio: bool
    audio_codec: str | None = None
    audio_rate: int | None = None
    audio_duration_s: float | None = None


def probe(path: Path) -> ClipInfo:
    """Decode a clip fully (frames are counted, not trusted from headers)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        rate = video.average_rate or video.guessed_rate
        return ClipInfo(
            width=video.codec_context.width,
            height=video.codec_context.height,
            frames=frames,
            fps=Fraction(rate),
            duration_s=frames / float(rate),
            codec=video.codec_context.name,
            has_audio=bool(container.streams.audio),
            **_probe_audio(container),
        )


def _probe_audio(container: av.container.InputContainer) -> dict[str, object]:
    if not container.streams.audio:
        return {}
    container.seek(0)
    stream = container.streams.audio[0]
    samples = sum(frame.samples for frame in container.decode(stream))
    return {"audio_codec": stream.codec_context.name, "audio_rate": stream.rate,
            "audio_duration_s": samples / stream.rate}
