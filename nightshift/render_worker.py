"""GPU work in a child process the caller owns: it can be timed out and killed, and its model stays loaded.

The parent sends one JSON line per shot; the child renders it with a renderer
it keeps across requests (so the pipeline is loaded once per run) and answers
with one JSON line. A shot that runs past its timeout, or a cancel, kills the
child's whole process group; the next shot starts a fresh child.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nightshift import errors
from nightshift.errors import NightshiftError
from nightshift.shot_render import ClipRecord


class ShotFailed(NightshiftError):
    """A shot's render raised, timed out, or its process died."""


class DiskFull(ShotFailed, errors.DiskFull):
    """The disk filled up during a render: not the script's fault, so it is not failed, only paused."""


class RenderWorker:
    """Parent side: spawn on first use, one request at a time, kill on timeout or close."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nightshift.render_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, env={**(self.env or os.environ), "NIGHTSHIFT_WORKER_PARENT": str(os.getpid())},
                start_new_session=True,  # its own process group, killed as one
            )
        return self.process

    def render(self, request: dict[str, Any], timeout_s: float) -> ClipRecord:
        process = self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            self.kill()
            raise ShotFailed(f"{request['shot_id']}: the render process died before the shot started") from None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                self.kill()
                raise ShotFailed(f"{request['shot_id']}: no result after {timeout_s:g} s; the render process was killed",
                                 "raise night.shot_timeout_s if shots this long are expected")
        line = process.stdout.readline()
        if not line:
            code = process.wait()
            self.process = None
            raise ShotFailed(f"{request['shot_id']}: the render process exited (status {code}) mid-shot")
        answer = json.loads(line)
        if not answer["ok"]:
            if answer.get("errno") in errors.DISK_FULL_ERRNOS:
                raise DiskFull(answer["error"], "free disk space; the script stays queued and the night resumes "
                                                "where it stopped (half-written files were removed)")
            raise ShotFailed(answer["error"], answer.get("hint", ""))
        return ClipRecord.model_validate(answer["record"])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None and self.process.stdin is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


def _serve(protocol_out) -> None:  # noqa: ANN001 - a text file object
    from nightshift.config import RenderDefaults
    from nightshift.render_job import shot_job
    from nightshift.shot_render import RendererChoice, make_renderer

    renderers: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            settings = RenderDefaults.model_validate(request["settings"])
            choice = RendererChoice(**request["choice"])
            key = json.dumps([request["choice"], request["settings"]], sort_keys=True)
            if key not in renderers:
                renderers[key] = make_renderer(choice, settings)
            job = shot_job(Path(request["plan_folder"]), Path(request["out_folder"]), request["shot_id"])
            record = renderers[key].render(job)
            answer = {"ok": True, "record": record.model_dump()}
        except Exception as error:  # noqa: BLE001 - every failure goes back to the parent as data
            answer = {"ok": False, "error": f"{request.get('shot_id')}: {type(error).__name__}: {error}",
                      "hint": getattr(error, "hint", ""), "errno": getattr(error, "errno", None)}
        protocol_out.write(json.dumps(answer) + "\n")
        protocol_out.flush()


def render_with_retries(worker: RenderWorker, request: dict[str, Any], timeout_s: float, retries: int,
                        warn: Any = None) -> ClipRecord:
    """Render one shot, retrying a failed or timed-out attempt `retries` times; the last failure is raised
    with every attempt's reason in its report."""
    reasons = []
    hint = "see the reasons above; raise night.shot_timeout_s for long shots, or fix the model setup"
    for attempt in range(1, retries + 2):
        try:
            return worker.render(request, timeout_s)
        except DiskFull:
            raise  # retrying cannot help until someone frees space
        except ShotFailed as error:
            reasons.append(f"attempt {attempt}: {error}")
            hint = error.hint or hint  # the last attempt's own advice (e.g. what to do about out-of-memory)
            if warn is not None:
                warn(f"{request['shot_id']} attempt {attempt}/{retries + 1} failed: {error.report()}")
    raise ShotFailed(f"{request['shot_id']}: failed {retries + 1} times ({'; '.join(reasons)})", hint)


def exit_with_parent(parent: int, interval_s: float = 1.0) -> threading.Thread:
    """End this process (and its group) when `parent` is gone.

    The worker runs in its own session so a timeout can kill it as a group; the flip side is that
    a parent killed outright (SIGKILL, a cancel from the UI that escalates) would leave it running
    a hung render. Polling the parent id notices within a second and takes the group down.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        try:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        finally:
            os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def main() -> None:
    exit_with_parent(int(os.environ.get("NIGHTSHIFT_WORKER_PARENT", os.getppid())))
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        _serve(protocol_out)
    finally:
        protocol_out.close()


if __name__ == "__main__":
    main()
