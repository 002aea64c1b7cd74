#!/usr/bin/env bash
# Create .venv and install Nightshift with its test tools. Safe to re-run.
# torch is pinned exactly (pyproject.toml): CPU machines get the CPU wheel, GPU machines the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# Debian's ffmpeg and ffprobe: the conformance checks read every delivered MP4 with tools we did not write.
if ! command -v ffprobe >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; }
    else
        echo "note: install ffmpeg (apt-get install ffmpeg) for the delivery conformance checks" >&2
    fi
fi
