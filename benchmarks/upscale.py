"""4K upscale throughput and memory: our PyAV streaming path against the ffmpeg command line.

Both do the same job on the same source in the same run: decode a 768x512 H.264
clip, lanczos-scale to 3840x2160 (aspect kept, padded), encode libx264 CRF 18
veryfast yuv420p. Each measurement runs in its own child process so peak RSS is
that job's alone.

    .venv/bin/python -m benchmarks.upscale            # 5 s and 20 s clips at 24 fps
    .venv/bin/python -m benchmarks.upscale --seconds 5 20 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nightshift.renderers.encode import EncodeSettings, encode_frames
from nightshift.renderers.upscale import UpscaleSettings, filter_chain, upscale_to_4k

FPS = 24


def make_source(path: Path, seconds: int, width: int = 768, height: int = 512) -> None:
    """A moving test pattern, so the encoder has real motion to code."""
    yy, xx = np.mgrid[0:height, 0:width]

    def frames():
        for i in range(seconds * FPS):
            frame = np.empty((height, width, 3), np.uint8)
            frame[..., 0] = (xx + i * 4) % 256
            frame[..., 1] = (yy * 2 + i * 3) % 256
            frame[..., 2] = ((xx // 32 + yy // 32 + i // 6) % 2) * 200
            yield frame

    encode_frames(frames(), path, FPS, EncodeSettings(crf=18))


def ffmpeg_filter() -> str:
    return ",".join(f"{name}={args}" for name, args in filter_chain(UpscaleSettings()))


def run_ours(source: Path, out: Path) -> dict[str, float]:
    started = time.perf_counter()
    frames = upscale_to_4k(source, out)
    wall = time.perf_counter() - started
    return {"frames": frames, "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_ffmpeg(source: Path, out: Path) -> dict[str, float]:
    settings = EncodeSettings()
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-vf", ffmpeg_filter(),
               "-c:v", "libx264", "-crf", str(settings.crf), "-preset", settings.preset, "-pix_fmt", "yuv420p",
               str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    frames = int(subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                 "stream=nb_read_frames", "-of", "csv=p=0", str(out)],
                                check=True, capture_output=True, text=True).stdout.strip())
    return {"frames": frames, "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def measure(kind: str, source: Path, out: Path) -> dict[str, float]:
    """Run one job in a fresh interpreter and return its figures."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.upscale", "--one", kind, str(source), str(out)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--one", nargs=3, metavar=("KIND", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, source, out = args.one
        runner = run_ours if kind == "ours" else run_ffmpeg
        print(json.dumps(runner(Path(source), Path(out))))
        return
    if shutil.which("ffmpeg") is None:
        sys.exit("the ffmpeg command line is needed as the reference: apt-get install ffmpeg")
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"machine: {platform.machine()}, {platform.system()} {platform.release()}, python {platform.python_version()}")
    print(f"reference: {version}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            source = Path(tmp) / f"src-{seconds}s.mp4"
            make_source(source, seconds)
            for kind in ("ours", "ffmpeg"):
                best = None
                for _ in range(args.repeat):
                    figures = measure(kind, source, Path(tmp) / f"{kind}-{seconds}s.mp4")
                    if best is None or figures["wall_s"] < best["wall_s"]:
                        best = figures
                best["fps"] = best["frames"] / best["wall_s"]
                rows[(seconds, kind)] = best
    print("| clip | frames | ours fps | ffmpeg fps | throughput ratio (ours/ffmpeg) | ours peak RSS | ffmpeg peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for seconds in args.seconds:
        ours, ref = rows[(seconds, "ours")], rows[(seconds, "ffmpeg")]
        print(f"| {seconds} s | {int(ours['frames'])} | {ours['fps']:.2f} | {ref['fps']:.2f} | {ours['fps'] / ref['fps']:.2f}x "
              f"| {ours['peak_rss_mb']:.0f} MB | {ref['peak_rss_mb']:.0f} MB |")
    if len(args.seconds) >= 2:
        short, long = min(args.seconds), max(args.seconds)
        growth = rows[(long, "ours")]["peak_rss_mb"] / rows[(short, "ours")]["peak_rss_mb"]
        print(f"\nours: peak RSS {long} s / {short} s = {growth:.3f}x (goal: within 1.1x)")


if __name__ == "__main__":
    main()
