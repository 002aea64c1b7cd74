"""The process the fault suite kills: the night's plain functions in a serving loop, without Prefect.

    python -m tests.faults.driver PROJECT_DIR

The same steps `nightshift serve --now` wires through Prefect flows: claims a crash left behind
are taken up again, new scripts are claimed and planned, and every queued job is rendered and
delivered in arrival order (higher user priorities first). It exits when the inbox and the queue are empty. Render starts and
ends are appended to PROJECT_DIR/renders.log, so the suite can count re-renders. Prefect's own
part of a crash (the server killed, a leaked GPU slot) is covered by tests/test_orchestration.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nightshift import night
from nightshift.config import load_settings
from nightshift.inbox import claim, is_candidate, leftover_claims, pending_files


def serve_until_idle(project: Path) -> int:
    settings = load_settings(project / "nightshift.toml")
    inbox = night.inbox_dir(settings)
    log = project / "renders.log"

    def note(line: str) -> None:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    delivered = 0
    while True:
        for path in leftover_claims(inbox):
            night.intake_claim(path, settings)
        for path in pending_files(inbox):
            if is_candidate(path)[0]:
                taken = claim(path, inbox)
                if taken is not None:
                    night.intake_claim(taken, settings)
        store = night.job_store(settings)
        if not store.pending():
            if not [p for p in pending_files(inbox) if is_candidate(p)[0]] and not leftover_claims(inbox):
                return delivered
            continue
        tried: set[str] = set()
        while (job := store.next_pending(tried)) is not None:
            tried.add(job.id)
            night.render_remaining(job, settings, "animatic", progress=note)
            night.deliver(night.job_store(settings).load(job.id), settings)
            delivered += 1


if __name__ == "__main__":
    serve_until_idle(Path(sys.argv[1]))
