"""Failpoints for the fault-injection suite (tests/faults/): a process kills itself at a chosen step.

NIGHTSHIFT_FAULT=<stage>:<n> sends SIGKILL to this process the n-th time it reaches <stage>
(<stage>-hang:<n> makes it hang there instead, for timeouts; <stage>-enospc:<n> raises the
"No space left on device" error a full disk gives; <stage>-oom:<n> raises CUDA's out-of-memory
error the n-th time and every time after, a model that fits at no memory tier),
so a test can stop the night at an exact point (mid-encode, between signing and the rename)
and check that a restart finishes with nothing lost or doubled. NIGHTSHIFT_FAULT=count:<file>
appends each stage reached to <file>, to learn where the points are. Unset, as it always is for
users, `reached` is one environment lookup.

The count is kept in NIGHTSHIFT_FAULT_STATE (a file) when set, so it spans the serving process
and its render children; a kill in a render child takes its parent (the serving process the
user started) down with it, as a machine losing power would.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import time

STAGES = ("claim", "plan", "queue", "render", "upscale", "encode", "deliver")
_counts: dict[str, int] = {}


def reached(stage: str) -> None:
    plan = os.environ.get("NIGHTSHIFT_FAULT")
    if not plan:
        return
    wanted, _, nth = plan.partition(":")
    if wanted == "count":
        with open(nth, "a", encoding="utf-8") as log:
            log.write(stage + "\n")
        return
    if wanted not in (stage, f"{stage}-hang", f"{stage}-enospc", f"{stage}-oom"):
        return
    _counts[wanted] = _count(wanted)
    if wanted.endswith("-oom") and _counts[wanted] >= int(nth or 1):
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (injected at {stage})")
    if _counts[wanted] == int(nth or 1):
        if wanted.endswith("-enospc"):
            raise OSError(errno.ENOSPC, "No space left on device (injected at " + stage + ")")
        if wanted.endswith("-hang"):
            while True:
                time.sleep(3600)
        parent = os.environ.get("NIGHTSHIFT_WORKER_PARENT")
        if parent:
            os.kill(int(parent), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def _count(wanted: str) -> int:
    """How often `wanted` has been reached, this time included: in this process, or across processes."""
    state = os.environ.get("NIGHTSHIFT_FAULT_STATE")
    if not state:
        return _counts.get(wanted, 0) + 1
    with open(state, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        count = handle.read().split().count(wanted) + 1
        handle.write(wanted + "\n")
        handle.flush()
    return count
