"""Several GPU machines, as README's "Several GPU machines" sets them up (tests/cluster/machines.py follows
its commands): a Prefect server on PostgreSQL (Debian's packages), three machines each running a Prefect
worker (process work pool) on its own queue, the studio folder shared by all, two inbox watchers. A queue of
six scripts; one machine killed mid-shot (SIGKILL to every process it has); its shot taken over once its
lease expires; every script delivered exactly once and verified; the records say which machine rendered
each shot.

Run with `pytest -m cluster` (`.ci/run` runs it after the default suite; about two minutes here).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightshift.delivery import read_manifest
from nightshift.records import load_records
from nightshift.verify import verify_delivery
from tests.cluster.machines import SCRIPTS, Postgres, bring_up, client_call, drop_queue, ready_queues, studio_jobs, wait_for
from tests.faults.test_kill_points import SHOT_LINE

pytestmark = pytest.mark.cluster

LEASE_TTL_S = 20  # how long a silent machine is trusted (night.lease_ttl_s); 60 s by default


@pytest.fixture(scope="session")
def database() -> Iterator[Postgres]:
    db = Postgres.start()
    yield db
    db.stop()


def _hung_shot(studio: Path, machine: str, fault_state: Path) -> str | None:
    """The shot lease `machine` holds once its render hangs (its third shot), if it does."""
    if not fault_state.is_file() or fault_state.read_text().split().count("render-hang") < 3:
        return None
    for record in (studio / ".nightshift" / "leases").glob("shot-*.json"):
        try:
            owner = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if owner["host"] == machine:
            return record.stem
    return None


def test_three_machines_one_killed_mid_shot_every_script_delivered_once(tmp_path: Path, database: Postgres) -> None:
    fault_state = tmp_path / "gpu-b-fault-state.txt"
    fault = {"gpu-b": {"NIGHTSHIFT_FAULT": "render-hang:3",  # its third shot never ends: killed mid-shot
                       "NIGHTSHIFT_FAULT_STATE": str(fault_state)}}
    # Two machines watch the inbox: each drop is still claimed, planned and queued once.
    cluster = bring_up(tmp_path, database.new_database(), 3, LEASE_TTL_S, fault, watchers=(0, 2))
    machines, studio, api, admin = cluster.machines.machines, cluster.studio, cluster.api, cluster.admin
    print(f"\nmachines: {cluster.machines.mode}" + (f" (namespaces cannot be made here: "
                                                   f"{cluster.machines.why_not_namespaces})"
                                                   if cluster.machines.why_not_namespaces else ""))
    try:
        drop_queue(studio)
        wait_for("six jobs planned and queued",
                 lambda: len([j for j in studio_jobs(studio) if j["state"] == "queued"]) == 6, 240, machines)
        wait_for("every machine's queue polled", lambda: ready_queues(api, admin) == {"gpu-a", "gpu-b", "gpu-c"},
                 60, machines)
        cluster.start_night()
        hung = wait_for("gpu-b hanging mid-shot", lambda: _hung_shot(studio, "gpu-b", fault_state), 240, machines, 0.2)
        killed = machines[1].kill()
        killed_at = time.monotonic()
        print(f"gpu-b killed ({killed} processes) in {hung}")
        wait_for("every job delivered", lambda: all(j["state"] == "delivered" for j in studio_jobs(studio)), 360,
                 machines)
        taken_after = time.monotonic() - killed_at

        jobs = studio_jobs(studio)
        said = "\n".join(m.logs() for m in machines)
        # Intake once, delivery once.
        assert len(jobs) == 6, [j["script_name"] for j in jobs]
        assert sorted(p.name for p in (studio / "inbox" / "done").iterdir()) == sorted(SCRIPTS)
        deliveries = [p.parent for p in studio.glob("output/*/*/manifest.json")]
        assert Counter(read_manifest(d).inputs.script.name for d in deliveries) == Counter({s: 1 for s in SCRIPTS})
        assert all(verify_delivery(d).ok for d in deliveries), [verify_delivery(d).problems for d in deliveries]
        # Which machine rendered each shot: all three took part; the hung shot was taken over, after its lease.
        rendered_on = {(d, r.shot_id): r.rendered_on for d in deliveries for r in load_records(d).values()}
        machines_used = Counter(rendered_on.values())
        assert set(machines_used) == {"gpu-a", "gpu-b", "gpu-c"}, machines_used
        parts = hung.split("-")  # shot-<job id>-<shot id>
        hung_job = next(j for j in jobs if j["id"] == "-".join(parts[1:-2]))
        hung_shot = "-".join(parts[-2:])
        assert rendered_on[(Path(hung_job["delivery"]), hung_shot)] in ("gpu-a", "gpu-c")
        assert f"{hung_shot} of job {hung_job['id']}: taken over from" in said, said[-3000:]
        assert taken_after >= LEASE_TTL_S * 0.5
        for delivery in deliveries:  # manifest.md names the machine of every shot
            table = (delivery / "manifest.md").read_text(encoding="utf-8")
            assert all(f"on {r.rendered_on} |" in table for r in load_records(delivery).values()), table
        # Every shot started once, but the one gpu-b died in (twice: there and where it was taken over).
        starts = Counter((m["title"].split(" - ")[-1], m["shot"]) for m in SHOT_LINE.finditer(said)
                         if m["kind"] == "rendering")
        twice = [key for key, n in starts.items() if n > 1]
        assert twice == [(hung_job["title"], hung_shot)] and starts[twice[0]] == 2, (twice, starts)
        assert sum(starts.values()) == len(rendered_on) + 1, starts
        # Each machine's GPU is its own limit, named by host and device; the live machines left theirs free.
        limits = _limits(api, admin)
        assert {"nightshift-gpu-gpu-a-cpu", "nightshift-gpu-gpu-c-cpu"} <= set(limits), limits
        assert limits["nightshift-gpu-gpu-a-cpu"] == 0 and limits["nightshift-gpu-gpu-c-cpu"] == 0, limits
        runs = _flow_runs(api, admin)
        night = time.strftime("%Y-%m-%d")
        assert runs.get(f"night of {night} on gpu-a") == "COMPLETED", runs
        assert runs.get(f"night of {night} on gpu-c") == "COMPLETED", runs
        # gpu-b cannot say it died: the machine that took its shot over marked its night Crashed in the UI.
        assert runs.get(f"night of {night} on gpu-b") == "CRASHED", runs
        print(f"shots per machine: {dict(machines_used)}; the killed machine's shot taken over {taken_after:.0f} s later")
    finally:
        cluster.close()


def _limits(api: str, admin: Path) -> dict[str, int]:
    code = ("import json\nfrom prefect.client.orchestration import get_client\n"
            "with get_client(sync_client=True) as c:\n"
            "    print(json.dumps({l.name: l.active_slots for l in c.read_global_concurrency_limits(limit=100)}))")
    return json.loads(client_call(api, admin, code))


def _flow_runs(api: str, admin: Path) -> dict[str, str]:
    code = ("import json\nfrom prefect.client.orchestration import get_client\n"
            "with get_client(sync_client=True) as c:\n"
            "    print(json.dumps({r.name: r.state.type.value for r in c.read_flow_runs(limit=200)}))")
    return json.loads(client_call(api, admin, code))
