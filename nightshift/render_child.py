"""The render child: `python -m nightshift.render_child`, started and owned by RenderWorker.

It reads one JSON request per line, renders the shot with a renderer it keeps across requests
(so the pipeline is loaded once per run) and answers one JSON line. It exits when its parent
is gone. This is the only process of a night that loads a video model or renders (the CLI process
imports torch too, only because `nightshift doctor` and `nightshift reproduce` live in it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nightshift.config import RenderDefaults
from nightshift.ladder import rung_render_settings, rung_spec
from nightshift.render_worker import READY
from nightshift.renderers.diffusers_shot import make_renderer
from nightshift.renderers.shots import ClipFinish, RendererChoice, ShotJob, ShotRenderer, finish_settings, shot_job
from nightshift.schemas import ClipRecord, spec_sha256


def _serve(protocol_out, renderers: dict[str, Any]) -> None:  # noqa: ANN001 - a text file object
    for line in sys.stdin:
        request = json.loads(line)
        try:
            settings = RenderDefaults.model_validate(request["settings"])
            rung = request.get("rung", "final")
            choice = RendererChoice(**request["choice"])
            if rung == "animatic":
                choice = RendererChoice("animatic", "cpu", "the animatic rung of the quality ladder")
            key = json.dumps([dataclasses.asdict(choice), request["settings"]], sort_keys=True)
            if key not in renderers:  # one per backend and settings: a draft reuses the final's loaded pipeline
                renderers[key] = make_renderer(choice, settings)
            job = shot_job(Path(request["plan_folder"]), Path(request["out_folder"]), request["shot_id"])
            record = render_rung(renderers[key], job, rung, settings)
            answer = {"ok": True, "record": record.model_dump()}
        except Exception as error:  # noqa: BLE001 - every failure goes back to the parent as data
            answer = {"ok": False, "error": f"{request.get('shot_id')}: {type(error).__name__}: {error}",
                      "hint": getattr(error, "hint", ""), "errno": getattr(error, "errno", None),
                      "kind": type(error).__name__}
        protocol_out.write(json.dumps(answer) + "\n")
        protocol_out.flush()


def render_rung(renderer: ShotRenderer, job: ShotJob, rung: str, settings: RenderDefaults) -> ClipRecord:
    """One shot at one rung of the quality ladder (nightshift/ladder.py): the final is the plan's spec; a draft
    renders its cheaper spec and is finished with the draft's cheap 4K fit; either is recorded with its rung."""
    if rung == "final":
        record = renderer.render(job)
        record.family, record.render_size = job.spec.family, [job.spec.width, job.spec.height]
        return record
    final_spec = job.spec
    spec = rung_spec(final_spec, rung, settings)
    upscale, encode = finish_settings(rung_render_settings(settings, rung))
    finish = renderer.finish  # the loaded pipeline is kept; only how its clip is finished changes for the rung
    renderer.finish = ClipFinish(upscale, encode)
    try:
        record = renderer.render(dataclasses.replace(job, spec=spec))
    finally:
        renderer.finish = finish
    record.rung, record.stands_for, record.rung_spec = rung, spec_sha256(final_spec), spec.model_dump(mode="json")
    record.family, record.render_size = spec.family, [spec.width, spec.height]
    record.notes.append(f"{rung}: stands in for the final ({spec.steps} steps at {spec.width}x{spec.height} against "
                        f"{final_spec.steps} at {final_spec.width}x{final_spec.height}); a later pass replaces it")
    return record


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
    renderers: dict[str, Any] = {}

    def terminated(signum: int, frame: object) -> None:
        """A stop or a timeout: a renderer with work on a server (ComfyUI) takes back only its own, then we go."""
        for renderer in list(renderers.values()):
            abandon = getattr(renderer, "abandon", None)
            if abandon is not None:
                abandon()
        os._exit(1)

    signal.signal(signal.SIGTERM, terminated)
    protocol_out.write(READY + "\n")  # imports done: the parent's shot timeout starts with the first request
    protocol_out.flush()
    try:
        _serve(protocol_out, renderers)
    finally:
        protocol_out.close()


if __name__ == "__main__":
    main()
