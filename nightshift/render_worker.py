"""GPU work in a child process the caller owns (nightshift/render_child.py): it can be timed out and killed,
and its model stays loaded.

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
from typing import Any

from nightshift.errors import DISK_FULL_ERRNOS, DiskFull, NightWaits, RenderServerDown, ShotFailed
from nightshift.schemas import ClipRecord


TERM_GRACE_S = 2.0
START_LIMIT_S = 300.0  # importing torch and the model code on a busy machine; not part of any shot's timeout
READY = "ready"


class RenderWorker:
    """Parent side: spawn on first use, one request at a time, kill on timeout or close."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.process: subprocess.Popen[str] | None = None
        self.stopped = False  # killed by a stop request: no new child is started

    def _start(self, shot_id: str) -> subprocess.Popen[str]:
        """The running child, or a new one once it says it is ready: a shot's timeout counts from when the child
        takes the shot, so a slow interpreter start on a loaded machine never eats into it."""
        if self.stopped:
            raise ShotFailed("stopped before the shot started")
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nightshift.render_child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, env={**(self.env or os.environ), "NIGHTSHIFT_WORKER_PARENT": str(os.getpid())},
                start_new_session=True,  # its own process group, killed as one
            )
            line = self._answer(self.process, START_LIMIT_S)
            if line is None:
                self.kill()
                raise ShotFailed(f"{shot_id}: the render process did not start within {START_LIMIT_S:g} s",
                                 "the machine may be overloaded; `nightshift doctor` checks the Python setup")
            if line and line.strip() != READY:  # something printed to the protocol's stream before main() took it
                self.kill()
                raise ShotFailed(f"{shot_id}: the render process printed {line.strip()[:200]!r} as it started",
                                 "a library printed to standard output on import; `nightshift doctor` checks the setup")
            if not line:
                code = self.process.wait()
                self.process = None
                if self.stopped:
                    raise ShotFailed("stopped before the shot started")
                raise ShotFailed(f"{shot_id}: the render process exited (status {code}) as it started",
                                 "its error is in the log above; `nightshift doctor` checks the Python setup")
        return self.process

    @staticmethod
    def _answer(process: subprocess.Popen[str], timeout_s: float) -> str | None:
        """The child's next line ("" when it has exited), or None when none came within timeout_s."""
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                return None
        return process.stdout.readline()

    def render(self, request: dict[str, Any], timeout_s: float) -> ClipRecord:
        process = self._start(request["shot_id"])
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            self.kill()
            raise ShotFailed(f"{request['shot_id']}: the render process died before the shot started") from None
        line = self._answer(process, timeout_s)
        if line is None:
            self.kill()
            raise ShotFailed(f"{request['shot_id']}: no result after {timeout_s:g} s; the render process was killed",
                             "raise night.shot_timeout_s if shots this long are expected")
        if not line and self.stopped:
            raise ShotFailed(f"{request['shot_id']}: stopped mid-shot; it renders again on the next start")
        if not line:
            code = process.wait()
            self.process = None
            raise ShotFailed(f"{request['shot_id']}: the render process exited (status {code}) mid-shot")
        answer = json.loads(line)
        if not answer["ok"]:
            if answer.get("kind") == "RenderServerDown":
                raise RenderServerDown(answer["error"], answer.get("hint", ""))
            if answer.get("errno") in DISK_FULL_ERRNOS:
                raise DiskFull(answer["error"], "free disk space; the script stays queued and the night resumes "
                                                "where it stopped (half-written files were removed)")
            raise ShotFailed(answer["error"], answer.get("hint", ""))
        return ClipRecord.model_validate(answer["record"])

    def stop(self) -> None:
        """Kill the render now and start no other (a stop request: Ctrl-C, SIGTERM)."""
        self.stopped = True
        self.kill()

    def kill(self) -> None:
        """SIGTERM first (a ComfyUI render interrupts its own prompt on the server), SIGKILL after TERM_GRACE_S."""
        if self.process is not None and self.process.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, None)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None and self.process.stdin is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


def render_with_retries(worker: RenderWorker, request: dict[str, Any], timeout_s: float, retries: int,
                        warn: Any = None) -> ClipRecord:
    """Render one shot, retrying a failed or timed-out attempt `retries` times; the last failure is raised
    with every attempt's reason in its report."""
    reasons = []
    hint = "see the reasons above; raise night.shot_timeout_s for long shots, or fix the model setup"
    for attempt in range(1, retries + 2):
        try:
            return worker.render(request, timeout_s)
        except NightWaits:
            raise  # retrying cannot help until space is freed or the server is back: the queue waits
        except ShotFailed as error:
            if worker.stopped:
                raise
            reasons.append(f"attempt {attempt}: {error}")
            hint = error.hint or hint  # the last attempt's own advice (e.g. what to do about out-of-memory)
            if warn is not None:
                warn(f"{request['shot_id']} attempt {attempt}/{retries + 1} failed: {error.report()}")
    raise ShotFailed(f"{request['shot_id']}: failed {retries + 1} times ({'; '.join(reasons)})", hint)
