#!/usr/bin/env bash
# Create .venv and install Nightshift with its test tools. Safe to re-run.
# torch is pinned exactly (pyproject.toml): CPU machines get the CPU wheel, GPU machines the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
