"""Which machine this is: its host name, or NIGHTSHIFT_MACHINE where host names do not tell machines apart
(containers that all call themselves `localhost`). Leases, GPU locks and slots, clip records and run names
all use this one name."""

from __future__ import annotations

import os
import platform


def machine_name() -> str:
    return os.environ.get("NIGHTSHIFT_MACHINE") or platform.node()
