#!/usr/bin/env bash
# Create .venv and install Nightshift with its test tools. Safe to re-run.
# torch is pinned exactly (pyproject.toml): CPU machines get the CPU wheel, GPU machines the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# Debian's packages the tests use: ffmpeg and ffprobe (the conformance checks read every delivered MP4 with
# tools we did not write) and chromium (the review page is tested in a real browser, driven by playwright).
need=()
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        # chromium with its recommends: the fonts a page is drawn in come with them
        apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; }
    else
        echo "note: install ${need[*]} (apt-get install ${need[*]}) for the delivery and review-page tests" >&2
    fi
fi
