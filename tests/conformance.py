"""Delivery conformance, checked with tools we did not write: Debian's ffmpeg and ffprobe (scripts/setup.sh
installs them), plus a reader of MP4 box layout. Every delivery the suite makes goes through
`check_delivery` (the autouse fixture in conftest.py); test_delivery.py also calls it directly.

Each MP4: decodes clean under `ffmpeg -xerror`; `moov` before `mdat`; BT.709 primaries, transfer
and matrix with limited range, in the stream and in a `colr` box; square pixels (`pasp`); a
timescale that counts whole frames; constant frame steps; as many frames as the plan says; movie,
track, media, edit and sample durations all exactly that many frames, with no edit-list shift;
audio as long as the pictures (to within one AAC frame, which the encoder pads to).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

from nightshift.renderers.encode import exact_rate
from nightshift.renderers.transitions import place_shots
from nightshift.schemas import Transition

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}
SAMPLE_ENTRIES = {b"avc1", b"hvc1", b"hev1"}


def tools_present() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def boxes(path: Path) -> dict[str, list[str]]:
    """Box types by where they sit: 'top' for the file's top level, 'sample' inside a video sample entry."""
    data = path.read_bytes()
    found: dict[str, list[str]] = {"top": [], "sample": []}

    def walk(start: int, end: int, where: str) -> None:
        for kind, body, box_end in _children(data, start, end):
            if where in ("top", "sample"):
                found[where].append(kind.decode("latin-1"))
            if kind in CONTAINERS:
                walk(body, box_end, "inner")
            elif kind == b"stsd":
                walk(body + 8, box_end, "inner")
            elif kind in SAMPLE_ENTRIES:
                walk(body + 78, box_end, "sample")

    walk(0, len(data), "top")
    return found


def _children(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, body start, box end) of each box in data[start:end]."""
    found, offset = [], start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[offset + 8:offset + 16])[0], 16
        elif size == 0:
            size = end - offset
        if size < header:
            raise AssertionError(f"a malformed box at byte {offset}")
        found.append((kind, offset + header, offset + size))
        offset += size
    return found


def video_timing(path: Path) -> dict[str, Fraction | int]:
    """The video track's durations as the boxes state them, in seconds: movie header, track header, media
    header, edit list; and the sample durations added up from stts."""
    data = path.read_bytes()
    moov = next((b, e) for kind, b, e in _children(data, 0, len(data)) if kind == b"moov")
    boxes_in = {kind: (b, e) for kind, b, e in _children(data, *moov)}
    movie_scale = struct.unpack(">I", data[boxes_in[b"mvhd"][0] + 12:boxes_in[b"mvhd"][0] + 16])[0]
    for kind, start, end in _children(data, *moov):
        if kind != b"trak":
            continue
        trak = {k: (b, e) for k, b, e in _children(data, start, end)}
        mdia = {k: (b, e) for k, b, e in _children(data, *trak[b"mdia"])}
        if data[mdia[b"hdlr"][0] + 8:mdia[b"hdlr"][0] + 12] != b"vide":
            continue
        tkhd = trak[b"tkhd"][0]
        media_scale, media_duration = struct.unpack(">II", data[mdia[b"mdhd"][0] + 12:mdia[b"mdhd"][0] + 20])
        stbl = {k: (b, e) for k, b, e in _children(data, *{k: (b, e) for k, b, e in
                                                           _children(data, *mdia[b"minf"])}[b"stbl"])}
        stts = stbl[b"stts"][0]
        entries = struct.unpack(">I", data[stts + 4:stts + 8])[0]
        samples = sum(count * delta for count, delta in
                      (struct.unpack(">II", data[stts + 8 + 8 * i:stts + 16 + 8 * i]) for i in range(entries)))
        timing: dict[str, Fraction | int] = {
            "movie_timescale": movie_scale, "media_timescale": media_scale,
            "track": Fraction(struct.unpack(">I", data[tkhd + 20:tkhd + 24])[0], movie_scale),
            "media": Fraction(media_duration, media_scale), "samples": Fraction(samples, media_scale)}
        if b"edts" in trak:
            elst = next(b for k, b, _ in _children(data, *trak[b"edts"]) if k == b"elst")
            count = struct.unpack(">I", data[elst + 4:elst + 8])[0]
            timing["edits"] = count
            timing["edit_shift"] = struct.unpack(">i", data[elst + 12:elst + 16])[0] if count else 0
            timing["edit_duration"] = sum(Fraction(struct.unpack(">I", data[elst + 8 + 12 * i:elst + 12 + 12 * i])[0],
                                                   movie_scale) for i in range(count))
        return timing
    raise AssertionError(f"{path.name}: no video track")


def _probe(path: Path) -> dict:
    """ffprobe's streams, format and packets (one call)."""
    done = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-show_entries",
                           "packet=stream_index,pts,duration", "-of", "json", str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def check_mp4(path: Path, frames: int, codec: str) -> list[str]:
    """Every way `path` falls short of what README says a delivered MP4 is (empty: conformant)."""
    problems: list[str] = []
    strict = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True)
    if strict.returncode or strict.stderr.strip():
        problems.append(f"strict decode: {strict.stderr.strip()[:300] or strict.returncode}")
    layout = boxes(path)
    if "moov" not in layout["top"] or layout["top"].index("moov") > layout["top"].index("mdat"):
        problems.append(f"moov is not before mdat: {layout['top']}")
    for box in ("colr", "pasp"):
        if box not in layout["sample"]:
            problems.append(f"no {box} box in the video sample entry ({layout['sample']})")
    info = _probe(path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    packets = [(int(p["pts"]), int(p["duration"])) for p in info.get("packets", [])
               if p["stream_index"] == video["index"]]
    tags = {key: video.get(key) for key in ("color_primaries", "color_transfer", "color_space", "color_range")}
    if tags != {"color_primaries": "bt709", "color_transfer": "bt709", "color_space": "bt709", "color_range": "tv"}:
        problems.append(f"colour tags {tags}")
    if video.get("sample_aspect_ratio") not in ("1:1", None):
        problems.append(f"pixel aspect {video.get('sample_aspect_ratio')}")
    if video["codec_name"] != codec:
        problems.append(f"codec {video['codec_name']}, not {codec}")
    rate = Fraction(video["r_frame_rate"])
    if Fraction(video["avg_frame_rate"]) != rate:
        problems.append(f"average rate {video['avg_frame_rate']} differs from {video['r_frame_rate']}")
    time_base = Fraction(video["time_base"])
    tick = 1 / (rate * time_base)
    if tick.denominator != 1:
        problems.append(f"timescale {time_base.denominator} does not count whole frames at {rate} fps")
    stamps = sorted(pts for pts, _ in packets)
    steps = {b - a for a, b in zip(stamps, stamps[1:])}
    if steps - {int(tick)} or {duration for _, duration in packets} - {int(tick)}:
        problems.append(f"frame steps {sorted(steps)} / durations not all {tick} ticks: variable frame rate")
    if len(packets) != frames:
        problems.append(f"{len(packets)} frames, the plan says {frames}")
    video_s = float(video["duration"])
    if abs(video_s - frames / rate) > 1e-6:
        problems.append(f"video lasts {video_s} s, {frames} frames at {rate} fps last {float(frames / rate)} s")
    timing = video_timing(path)
    wanted = Fraction(frames) / rate
    stated = {key: timing[key] for key in ("track", "media", "samples", "edit_duration") if key in timing}
    if any(value != wanted for value in stated.values()):
        problems.append(f"durations disagree with {frames} frames at {rate} fps: {stated}")
    if timing.get("edits", 1) != 1 or timing.get("edit_shift", 0) != 0:
        problems.append(f"an edit list that shifts the pictures ({timing.get('edits')} entries, "
                        f"shift {timing.get('edit_shift')} ticks)")
    audio = next((s for s in info["streams"] if s["codec_type"] == "audio"), None)
    if audio is not None and abs(float(audio["duration"]) - video_s) > 1024 / int(audio["sample_rate"]) + 1e-6:
        problems.append(f"audio lasts {audio['duration']} s, video {video_s} s")
    return [f"{path.name}: {problem}" for problem in problems]


def check_delivery(folder: Path) -> list[str]:
    """Conformance problems of every MP4 in a delivery folder, against its own manifest and plan."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    checks = []
    for shot in manifest["shots"]:
        clip = shot["clip"]
        codec = {"libx264": "h264", "libx265": "hevc"}[clip["encode_settings"].get("codec", "libx264")]
        checks.append((folder / clip["file"], shot["spec"]["num_frames"], codec))
    cut = manifest.get("cut")
    if cut is not None:
        specs = [shot["spec"] for shot in manifest["shots"]]
        layout = place_shots([s["num_frames"] for s in specs], [Transition(s["transition"]) for s in specs],
                             exact_rate(specs[0]["fps"]))
        codec = {"libx264": "h264", "libx265": "hevc"}[cut["encode_settings"].get("codec", "libx264")]
        checks.append((folder / cut["file"], layout[-1].end, codec))
    with ThreadPoolExecutor(max_workers=2) as pool:  # each check waits on ffmpeg and ffprobe
        return [problem for found in pool.map(lambda check: check_mp4(*check), checks) for problem in found]
