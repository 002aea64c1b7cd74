"""Streaming 4K upscale: decoder -> FFmpeg scaler (lanczos, pad or crop, optional CAS) -> encoder.

One frame is in flight at a time, so peak memory does not grow with clip length.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import av
from av.filter import Graph

from nightshift import faults

from nightshift.files import atomic_output
from nightshift.renderers.encode import BT709, LIMITED_RANGE, EncodeSettings, add_video_stream, encode_picture, exact_rate, open_mp4
from nightshift.renderers.transitions import edit_points

if TYPE_CHECKING:
    from nightshift.renderers.upscale_model import SuperResolution


@dataclass(frozen=True)
class UpscaleSettings:
    width: int = 3840
    height: int = 2160
    fit: Literal["pad", "crop"] = "pad"  # pad keeps the whole picture (bars); crop fills the frame
    sharpen: float = 0.0  # FFmpeg `cas` strength 0-1; 0 disables
    scaler: str = "lanczos"

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"upscale target {self.width}x{self.height} must be positive and even")
        if not 0.0 <= self.sharpen <= 1.0:
            raise ValueError(f"sharpen {self.sharpen} is outside 0-1")


def filter_chain(settings: UpscaleSettings) -> list[tuple[str, str]]:
    """The (filter, arguments) chain for libavfilter, aspect ratio kept. YUV in stays YUV (the scaler only
    resamples); RGB in (a super-resolution model's output) is converted with the BT.709 matrix."""
    w, h = settings.width, settings.height
    colour = "out_color_matrix=bt709:out_range=tv"
    if settings.fit == "pad":
        chain = [("scale", f"w={w}:h={h}:force_original_aspect_ratio=decrease:force_divisible_by=2:"
                           f"flags={settings.scaler}:{colour}"),
                 ("pad", f"w={w}:h={h}:x=(ow-iw)/2:y=(oh-ih)/2:color=black")]
    else:
        chain = [("scale", f"w={w}:h={h}:force_original_aspect_ratio=increase:flags={settings.scaler}:{colour}"),
                 ("crop", f"w={w}:h={h}")]
    chain.append(("setsar", "1"))
    if settings.sharpen > 0:
        chain.append(("cas", f"strength={settings.sharpen}"))
    chain.append(("format", "yuv420p"))
    return chain


def upscale_to_4k(source: Path, final: Path, settings: UpscaleSettings = UpscaleSettings(),
                  encode: EncodeSettings = EncodeSettings(), model: SuperResolution | None = None) -> int:
    """Upscale `source` into `final` (written atomically). Returns the number of frames written.

    With `model`, each decoded frame first goes through the super-resolution network (tiled),
    and the FFmpeg chain fits its output to the target size.
    """
    count = 0
    with av.open(str(source)) as reader, atomic_output(final) as tmp:
        video_in = reader.streams.video[0]
        rate = exact_rate(Fraction(video_in.average_rate or video_in.guessed_rate))
        with open_mp4(tmp, rate) as writer:
            video_out = add_video_stream(writer, settings.width, settings.height, rate, encode)
            # The source is our own native clip, just written: its sample count is its frame count.
            keyframes = edit_points(video_in.frames, rate)
            audio_in = reader.streams.audio[0] if reader.streams.audio else None
            audio_out = writer.add_stream("aac", rate=audio_in.rate) if audio_in is not None else None

            graph = Graph()
            if model is None:
                node = graph.add_buffer(template=video_in)
            else:
                node = graph.add_buffer(width=video_in.codec_context.width * model.scale,
                                        height=video_in.codec_context.height * model.scale, format="rgb24",
                                        time_base=video_in.time_base)
            for name, args in filter_chain(settings):
                nxt = graph.add(name, args)
                node.link_to(nxt)
                node = nxt
            sink = graph.add("buffersink")
            node.link_to(sink)
            graph.configure()

            streams = [video_in] + ([audio_in] if audio_in is not None else [])
            for packet in reader.demux(*streams):
                if packet.stream is audio_in and audio_out is not None:
                    for audio_frame in packet.decode():
                        audio_frame.pts = None
                        writer.mux(audio_out.encode(audio_frame))
                    continue
                for frame in packet.decode():
                    faults.reached("upscale")
                    graph.push(frame if model is None else _super_resolve(model, frame))
                    count += _drain(graph, writer, video_out, count, keyframes)
            graph.push(None)
            count += _drain(graph, writer, video_out, count, keyframes)
            writer.mux(video_out.encode(None))
            if audio_out is not None:
                writer.mux(audio_out.encode(None))
    return count


def _super_resolve(model: SuperResolution, frame: av.VideoFrame) -> av.VideoFrame:
    rgb = frame.reformat(format="rgb24", src_colorspace="ITU709").to_ndarray()  # the network wants RGB
    result = av.VideoFrame.from_ndarray(model.upscale_rgb(rgb), format="rgb24")
    result.pts, result.time_base = frame.pts, frame.time_base
    return result


def _drain(graph: Graph, writer: av.container.OutputContainer, stream: av.video.stream.VideoStream, start: int,
           keyframes: set[int]) -> int:
    """Encode whatever the filter graph has ready; frames are renumbered one tick per frame."""
    pulled = 0
    while True:
        try:
            frame = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return pulled
        frame.colorspace, frame.color_range = BT709, LIMITED_RANGE
        encode_picture(writer, stream, frame, start + pulled, keyframes)
        pulled += 1
