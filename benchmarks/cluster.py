"""Throughput with 1, 2 and 3 GPU machines: the same six-script queue, small renders.

    .venv/bin/python -m benchmarks.cluster            # as root: PostgreSQL, network namespaces

Each run is README's "Several GPU machines" from scratch (tests/cluster/machines.py): a fresh Prefect
database on one PostgreSQL cluster, the server on it, N machines each with a worker on its own queue, one
inbox watcher; the six scripts dropped and planned; then the night started (`nightshift-night/night`) and
timed until every job is delivered. Wall time and shots per machine per run, and the ratio to one worker.
On a CPU-only box every "machine" shares the same cores, so this measures what the lease-per-shot
scheduling and Prefect cost and overlap, not what separate GPUs would add.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

from nightshift.records import load_records
from tests.cluster.machines import Postgres, bring_up, drop_queue, ready_queues, studio_jobs, wait_for


def one_run(root: Path, db: Postgres, workers: int) -> dict:
    cluster = bring_up(root, db.new_database(), workers, lease_ttl_s=60)
    machines = cluster.machines.machines
    try:
        drop_queue(cluster.studio)
        wait_for("six jobs queued", lambda: len([j for j in studio_jobs(cluster.studio) if j["state"] == "queued"]) == 6,
                 300, machines)
        names = {m.name for m in machines}
        wait_for("every queue polled", lambda: ready_queues(cluster.api, cluster.admin) == names, 90, machines)
        started = time.monotonic()
        cluster.start_night()
        wait_for("every job delivered", lambda: all(j["state"] == "delivered" for j in studio_jobs(cluster.studio)),
                 900, machines, 0.25)
        wall = time.monotonic() - started
        shots = Counter(r.rendered_on for manifest in cluster.studio.glob("output/*/*/manifest.json")
                        for r in load_records(manifest.parent).values())
        return {"workers": workers, "wall_s": round(wall, 1), "shots": sum(shots.values()),
                "shots_per_machine": dict(sorted(shots.items())), "mode": cluster.machines.mode}
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    db = Postgres.start()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="nightshift-cluster-bench-") as temp:
            for workers in args.workers:
                result = one_run(Path(temp) / f"run-{workers}", db, workers)
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        db.stop()
    base = next((r["wall_s"] for r in results if r["workers"] == 1), None)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {results[0]['mode']}")
    print("| workers | wall s (night start to last delivery) | shots | shots per machine | speed-up vs 1 |")
    print("|---|---|---|---|---|")
    for r in results:
        ratio = f"{base / r['wall_s']:.2f}x" if base else "-"
        per = ", ".join(f"{k} {v}" for k, v in r["shots_per_machine"].items())
        print(f"| {r['workers']} | {r['wall_s']} | {r['shots']} | {per} | {ratio} |")


if __name__ == "__main__":
    main()
