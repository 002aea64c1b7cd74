"""Contract test against a real Ollama: runs only when OLLAMA_HOST answers (pytest -m ollama_live)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nightshift.agents.intake import read_script
from nightshift.agents.planner_ollama import ollama_version
from nightshift.agents.planning import plan_script
from nightshift.config import Settings
from tests.conftest import CORPUS

pytestmark = pytest.mark.ollama_live


@pytest.fixture
def live_host() -> str:
    host = os.environ.get("NIGHTSHIFT_LIVE_OLLAMA_HOST") or os.environ.get("OLLAMA_LIVE_HOST", "")
    if not host or ollama_version(host) is None:
        pytest.skip("set NIGHTSHIFT_LIVE_OLLAMA_HOST to a running Ollama server to run the contract test")
    return host


def test_real_model_plans_the_lighthouse(live_host: str, tmp_path: Path) -> None:
    model = os.environ.get("NIGHTSHIFT_LIVE_OLLAMA_MODEL", "qwen3:4b")
    settings = Settings(project_dir=tmp_path, planner={"kind": "ollama", "ollama_host": live_host, "model": model,
                                                       "on_failure": "fail"})
    script, decoded = read_script(CORPUS / "lighthouse.fountain")
    shotlist = plan_script(script, decoded.sha256, settings)
    assert shotlist.planner.kind == "ollama" and {s.scene for s in shotlist.shots} == {1, 2, 3, 4}
