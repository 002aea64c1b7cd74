"""Errors a user sees. Each says what went wrong, where, and what to do next."""

from __future__ import annotations

import errno
from pathlib import Path


class NightshiftError(Exception):
    """Base for errors the CLI reports without a traceback."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint or self.hint

    def report(self) -> str:
        text = str(self)
        return f"{text}\n  -> {self.hint}" if self.hint else text


class ScriptError(NightshiftError):
    """A script file that cannot be read or understood."""

    def __init__(self, path: Path | str, problem: str, hint: str = "") -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path.name}: {problem}", hint)


class ShotListError(NightshiftError):
    """A shotlist.json (often hand-edited) that does not validate."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}", "fix the file (your editor can check it against shotlist.schema.json)")


class PlannerError(NightshiftError):
    """Shot planning failed."""


class OllamaUnavailable(PlannerError):
    hint = "start Ollama (`ollama serve`) or use --planner rules"


class OllamaModelMissing(PlannerError):
    def __init__(self, model: str, host: str) -> None:
        super().__init__(f"Ollama at {host} does not have the model {model!r}", f"run: ollama pull {model}")
        self.model = model


class PlannerOutputError(PlannerError):
    """The model's answers stayed invalid after every repair attempt."""


class NightWaits(NightshiftError):
    """Something every job needs is missing for now (disk space, the render server): not the script's fault, so
    nothing is failed; the job stays queued and the whole queue waits, trying again with a backoff."""


class DiskFull(NightWaits):
    """The disk filled up: not the script's fault, so nothing is failed; the work waits for space."""

    hint = "free disk space; nothing was failed or lost, and the night resumes where it stopped"


class RenderServerDown(NightWaits):
    """The render server (the user's ComfyUI) does not answer: nothing is failed; the queue waits for it."""

    hint = "start it again (or fix render.comfyui.url); the queue waits and the night resumes where it stopped"


class ShotFailed(NightshiftError):
    """A shot's render raised, timed out, or its process died."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # the kernel's words for a full disk or a spent quota


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC or a quota, however the library wrapped it (PyAV's errors carry errno too; c2pa's say it in words)."""
    return getattr(error, "errno", None) in DISK_FULL_ERRNOS or any(
        words in str(error) for words in ("No space left on device", "Disk quota exceeded"))
