from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightshift.config import Settings
from nightshift.verify import verify_delivery
from tests.conformance import check_delivery, tools_present
from tests.ollama_double import OllamaDouble

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
if not CORPUS.is_dir():  # a checkout without ../shared: the copy bundled with the examples
    CORPUS = REPO / "examples" / "corpus"
CORPUS_FILES = ["lighthouse.fountain", "courier.fountain", "night_train.md", "paper_boat.txt"]


@pytest.fixture(scope="session", autouse=True)
def _private_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches that live in the user's home (weight hashes) go to a temporary folder instead."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's config or talks to a real Ollama by accident."""
    for key in list(os.environ):
        if key.startswith("NIGHTSHIFT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # discard port: nothing listens
    # An empty, offline Hugging Face cache: a test never finds the developer's models or reaches a hub.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.chdir(tmp_path)


_CONFORMED: dict[Path, int] = {}  # delivery folder -> manifest.json mtime when last checked


def _check_new_deliveries(root: Path) -> None:
    """Conformance (tests/conformance.py) of every new or re-sealed delivery under `root`; one a test tampered
    with on purpose (verify fails) is left."""
    if not tools_present():
        if os.environ.get("CI"):
            pytest.fail("ffmpeg/ffprobe are missing: scripts/setup.sh installs them (apt-get install ffmpeg)")
        return
    for manifest in root.rglob("manifest.json"):
        folder, stamp = manifest.parent, manifest.stat().st_mtime_ns
        if _CONFORMED.get(folder) == stamp or not (folder / "renders.json").is_file():
            continue
        _CONFORMED[folder] = stamp
        if verify_delivery(folder).ok:
            problems = check_delivery(folder)
            assert not problems, f"{folder} does not conform:\n" + "\n".join(problems)


@pytest.fixture(scope="session", autouse=True)
def _session_deliveries_conform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end, every delivery a module's fixtures made (outside any one test's folder) is checked too."""
    yield
    _check_new_deliveries(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def _every_delivery_conforms(tmp_path: Path) -> Iterator[None]:
    """After each test, every delivery it made in its own folder goes through the conformance checks."""
    yield
    _check_new_deliveries(tmp_path)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    shutil.copytree(CORPUS, folder)
    return folder


@pytest.fixture
def ollama_double() -> Iterator[OllamaDouble]:
    double = OllamaDouble().start()
    yield double
    double.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(project_dir=tmp_path)


def ollama_settings(tmp_path: Path, double: OllamaDouble, **planner: object) -> Settings:
    return Settings(
        project_dir=tmp_path,
        planner={"kind": "ollama", "ollama_host": double.url, "timeout_s": 5, **planner},
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true",
                     help="fault-injection suite (tests/faults): 500 kill points instead of 50")


# Orchestration is about the night, not pixels: deliveries at 640x360 (4K is covered by the render tests).
FAST_RENDER = {"NIGHTSHIFT_RENDER__FPS": "8", "NIGHTSHIFT_RENDER__WIDTH": "256", "NIGHTSHIFT_RENDER__HEIGHT": "160",
               "NIGHTSHIFT_RENDER__OUTPUT_WIDTH": "640", "NIGHTSHIFT_RENDER__OUTPUT_HEIGHT": "360",
               "NIGHTSHIFT_NIGHT__STABLE_S": "0.5", "NIGHTSHIFT_NIGHT__POLL_S": "0.2", "NIGHTSHIFT_PLANNER__KIND": "rules"}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    os.environ.update({"PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")), "DO_NOT_TRACK": "1",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings(updates={"flows.heartbeat_frequency": None}), prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `prefect server start` of its own, for `nightshift serve` processes the tests start and kill."""
    from tests.prefect_server import free_port, start_prefect_server, stop

    home = tmp_path_factory.mktemp("prefect-api-home")
    env = {**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    port = free_port()
    server = start_prefect_server(port, env, home / "server.log")
    yield f"http://127.0.0.1:{port}/api"
    stop(server)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in FAST_RENDER.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "inbox").mkdir()
    return Settings(project_dir=tmp_path)
