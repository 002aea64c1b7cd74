"""Encoding frames to MP4 with PyAV: streaming, exact timing, true colour, web-ready layout.

What every delivered MP4 is (README "What arrives in the morning"):
- H.264 (or HEVC with render.codec = "libx265"), 4:2:0, BT.709 primaries, transfer and matrix,
  limited range, tagged in the stream and in the container (`colr`), square pixels (`pasp`).
  RGB frames are converted with the BT.709 matrix; frames already in YUV are never converted.
- Timing in whole ticks: the track and movie timescales are a multiple of the frame rate's
  numerator (12288 for 24 fps, 24000 for 23.976), so every frame lasts exactly the same number
  of ticks and the track, movie, media and sample durations agree. B-frame reordering is carried
  by signed composition offsets (ctts version 1), so the video needs no edit-list shift at all.
- A closed GOP about every `keyframe_interval_s`, IDR keyframes, plus one at every edit point
  a transition may need (renderers/transitions.py), so a cut can join shots by stream copy.
- `moov` before `mdat` (faststart), so a browser plays and seeks before the file has arrived;
  signing later inserts its box before `moov` and keeps that order.

A clip is written under a temporary name in the target folder and renamed only
once the encoder has flushed, so a half-written file is never taken for a
finished clip; on any failure the partial file is removed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from nightshift import faults
from nightshift.files import atomic_output

# AVCOL_* values: BT.709 primaries, transfer and matrix; MPEG (limited, "tv") range.
BT709, LIMITED_RANGE = 1, 1
CODECS = ("libx264", "libx265")


@dataclass(frozen=True)
class EncodeSettings:
    codec: str = "libx264"  # or "libx265" (HEVC)
    crf: int = 18
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    keyframe_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec {self.codec!r}: use libx264 (H.264) or libx265 (HEVC)")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf {self.crf} is outside 0-51")
        if self.pix_fmt != "yuv420p":
            raise ValueError(f"pix_fmt {self.pix_fmt!r}: deliveries are yuv420p")
        if not 0.1 <= self.keyframe_interval_s <= 10:
            raise ValueError(f"keyframe interval {self.keyframe_interval_s} s is outside 0.1-10 s")

    def describe(self) -> str:
        return (f"{self.codec} crf {self.crf} preset {self.preset} {self.pix_fmt} BT.709 limited range, "
                f"keyframe every {self.keyframe_interval_s:g} s")

    def options(self, rate: Fraction) -> dict[str, str]:
        gop = max(1, round(self.keyframe_interval_s * rate))
        options = {"crf": str(self.crf), "preset": self.preset, "forced-idr": "1"}
        if self.codec == "libx265":
            options["x265-params"] = f"log-level=error:keyint={gop}:min-keyint=1:open-gop=0"
        else:
            options["x264-params"] = f"keyint={gop}:min-keyint=1"
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


def track_timescale(rate: Fraction) -> int:
    """Ticks per second in which each frame lasts a whole number of ticks (at least 10000, as FFmpeg likes)."""
    scale = rate.numerator
    while scale < 10000:
        scale *= 2
    return scale


def container_options(rate: Fraction) -> dict[str, str]:
    """MP4 muxer options: faststart, colour box, B-frames without an edit-list shift (with one, FFmpeg's media
    header ran a frame long), and one exact timescale for the movie and its video track."""
    scale = str(track_timescale(rate))
    return {"movflags": "+faststart+write_colr+negative_cts_offsets", "movie_timescale": scale,
            "video_track_timescale": scale}


def open_mp4(path: Path, rate: Fraction) -> av.container.OutputContainer:
    return av.open(str(path), "w", format="mp4", options=container_options(rate))


def add_video_stream(container: av.container.OutputContainer, width: int, height: int, fps: float | Fraction,
                     settings: EncodeSettings) -> av.video.stream.VideoStream:
    if width % 2 or height % 2:
        raise ValueError(f"{width}x{height}: yuv420p needs even width and height")
    rate = exact_rate(fps)
    stream = container.add_stream(settings.codec, rate=rate, options=settings.options(rate))
    stream.width, stream.height, stream.pix_fmt = width, height, settings.pix_fmt
    stream.time_base = 1 / rate
    stream.thread_type = "FRAME"  # x264's sliced threads cost compression for latency we do not need
    context = stream.codec_context
    context.color_primaries = context.color_trc = context.colorspace = BT709
    context.color_range = LIMITED_RANGE
    context.sample_aspect_ratio = Fraction(1, 1)
    if settings.codec == "libx265":
        stream.codec_tag = "hvc1"  # what QuickTime, Safari and Final Cut read as HEVC in MP4
    return stream


def to_yuv(array: np.ndarray) -> av.VideoFrame:
    """An RGB uint8 frame (H, W, 3) as BT.709 limited-range 4:2:0."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
    frame = frame.reformat(format="yuv420p", src_colorspace="ITU709", dst_colorspace="ITU709")
    frame.colorspace, frame.color_range = BT709, LIMITED_RANGE
    return frame


def encode_picture(container: av.container.OutputContainer, stream: av.video.stream.VideoStream,
                   frame: av.VideoFrame, index: int, keyframes: Collection[int] = ()) -> None:
    """Encode frame number `index` (one tick of 1/rate each); an IDR keyframe when `index` is in `keyframes`."""
    frame.pts = index
    frame.time_base = 1 / Fraction(stream.codec_context.framerate)  # not stream.time_base: the muxer changes it
    frame.pict_type = av.video.frame.PictureType.I if index in keyframes else av.video.frame.PictureType.NONE
    container.mux(stream.encode(frame))


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


class AudioTrack:
    """An AAC track fed (channels, samples) float blocks in [-1, 1] as they come; `close` flushes it."""

    CHUNK = 1024 * 16

    def __init__(self, container: av.container.OutputContainer, stream: av.audio.stream.AudioStream) -> None:
        self.container, self.stream, self.written = container, stream, 0

    def add(self, block: np.ndarray) -> None:
        for start in range(0, block.shape[1], self.CHUNK):
            piece = np.ascontiguousarray(block[:, start:start + self.CHUNK], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=self.stream.layout.name)
            frame.sample_rate = self.stream.rate
            frame.pts = self.written
            self.written += piece.shape[1]
            self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))


def write_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                audio: np.ndarray | Iterable[np.ndarray]) -> None:
    """Encode (channels, samples) float blocks, one block or a stream of them, then flush."""
    track = AudioTrack(container, stream)
    for block in [audio] if isinstance(audio, np.ndarray) else audio:
        track.add(block)
    track.close()


def encode_frames(frames: Iterable[np.ndarray], final: Path, fps: float | Fraction,
                  settings: EncodeSettings = EncodeSettings(), audio: np.ndarray | Iterable[np.ndarray] | None = None,
                  sample_rate: int | None = None, channels: int | None = None) -> int:
    """Encode RGB uint8 frames (H, W, 3), one at a time, into `final`, with an AAC track when `audio` is
    given as (channels, samples) floats, whole or as a stream of blocks. Returns the frame count."""
    return encode_pictures((to_yuv(array) for array in frames), final, fps, settings, audio=audio,
                           sample_rate=sample_rate, channels=channels)


def encode_pictures(frames: Iterable[av.VideoFrame], final: Path, fps: float | Fraction,
                    settings: EncodeSettings = EncodeSettings(), keyframes: Collection[int] = (),
                    audio: np.ndarray | Iterable[np.ndarray] | None = None, sample_rate: int | None = None,
                    channels: int | None = None) -> int:
    """Encode YUV 4:2:0 frames into `final` as they come; `keyframes` are frame numbers that start a GOP."""
    if audio is not None:
        channels = audio.shape[0] if isinstance(audio, np.ndarray) and audio.ndim == 2 else channels
        if channels is None:
            raise ValueError("streamed audio needs its channel count")
    rate = exact_rate(fps)
    count = 0
    with atomic_output(final) as tmp:
        with open_mp4(tmp, rate) as container:
            stream = None
            for frame in frames:
                if stream is None:
                    stream = add_video_stream(container, frame.width, frame.height, rate, settings)
                    if audio is not None:
                        audio_stream = add_audio_stream(container, channels, sample_rate or 0)
                encode_picture(container, stream, frame, count, keyframes)
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
