"""Several GPU machines on one box, as README's "Several GPU machines" sets them up, for the cluster test
and benchmarks/cluster.py.

- PostgreSQL from Debian's packages (installed with apt-get when missing): a cluster of its own on a free
  port, a role and a database for Prefect, dropped at the end.
- `prefect server start` on it (PREFECT_API_DATABASE_CONNECTION_URL), its concurrency leases on disk.
- Machines: network namespaces (`ip netns`, a veth each on one bridge, loopback-range addresses only), each
  with its own host name (a UTS namespace), temporary folder and PREFECT_HOME, all sharing one studio
  folder. Where namespaces cannot be made (not root, no iproute2), separate process groups, each told its
  name by NIGHTSHIFT_MACHINE; `mode` says which, and the test prints it.
- A machine dies by SIGKILL to every process it has (the namespace's pids, or every process whose
  environment names the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.faults.test_kill_points import PROJECT_TOML
from tests.prefect_server import free_port, start_prefect_server, stop

REPO = Path(__file__).resolve().parents[2]
POOL = "nightshift-gpu"
T = TypeVar("T")


def run(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def clean_env() -> dict[str, str]:
    """This environment without Nightshift's or Prefect's settings (each machine gets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTSHIFT_", "PREFECT_"))}
    return {**env, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(REPO)}


# ---------------------------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    """A PostgreSQL cluster of this run's own (Debian's pg_createcluster), with a database for Prefect."""

    version: str
    name: str
    port: int
    databases: int = 0

    @classmethod
    def start(cls) -> Postgres:
        if shutil.which("pg_createcluster") is None:
            if os.geteuid() != 0 or shutil.which("apt-get") is None:
                raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
            install = ["apt-get", "install", "-y", "-qq", "postgresql"]
            if subprocess.run(install, capture_output=True, check=False).returncode != 0:
                run(["apt-get", "update", "-qq"])
                run(install, timeout=600)
        version = sorted(os.listdir("/usr/lib/postgresql"), key=float)[-1]
        db = cls(version, f"nightshift{os.getpid()}", free_port())
        run(["pg_createcluster", version, db.name, "-p", str(db.port), "--start"], timeout=120)
        return db

    def new_database(self) -> str:
        """A fresh role and database for one Prefect server; its connection URL."""
        self.databases += 1
        name, password = f"prefect{self.databases}", secrets.token_hex(12)
        for statement in (f"CREATE ROLE {name} LOGIN PASSWORD '{password}';", f"CREATE DATABASE {name} OWNER {name};"):
            run(["runuser", "-u", "postgres", "--", "psql", "-p", str(self.port), "-v", "ON_ERROR_STOP=1",
                 "-c", statement])
        return f"postgresql+asyncpg://{name}:{password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], capture_output=True, check=False)


# ---------------------------------------------------------------------------------------------- machines


def namespaces_possible() -> str | None:
    """None when network namespaces can be made here, else why not. CLUSTER_MACHINES=process-groups
    runs the fallback even where namespaces work (to try it)."""
    if os.environ.get("CLUSTER_MACHINES") == "process-groups":
        return "CLUSTER_MACHINES=process-groups was asked for"
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "iproute2 or unshare missing"
    probe = f"nsprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"ip netns add: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@dataclass
class Machine:
    name: str
    folder: Path
    env: dict[str, str]
    netns: str | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)

    def command(self, argv: list[str]) -> list[str]:
        if self.netns is None:
            return argv
        # A UTS namespace inside the network namespace: the machine's own host name.
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--", "sh", "-c",
                f'hostname {self.name} && exec "$@"', "sh", *argv]

    def start(self, argv: list[str], log_name: str, cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.folder / log_name, "a", encoding="utf-8")  # noqa: SIM115 - the process writes it
        process = subprocess.Popen(self.command(argv), env=self.env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        """Every process this machine has now."""
        if self.netns is not None:
            listed = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False)
            return [int(p) for p in listed.stdout.split()]
        marker = f"NIGHTSHIFT_MACHINE={self.name}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found

    def kill(self) -> int:
        """SIGKILL to all of this machine's processes (a power cut); how many there were."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return len(pids)

    def logs(self) -> str:
        return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(self.folder.glob("*.log")))


class Machines:
    """The server's address and the machines, made as namespaces on a bridge or as process groups."""

    def __init__(self, root: Path, count: int) -> None:
        self.root, self.count = root, count
        self.why_not_namespaces = namespaces_possible()
        self.mode = "network namespaces" if self.why_not_namespaces is None else "process groups"
        self.tag = secrets.token_hex(2)
        self.subnet = f"127.{77 + int(self.tag, 16) % 150}.{int(self.tag[:2], 16) % 250 + 1}"
        self.bridge = f"nsb{self.tag}"
        self.server_address = f"{self.subnet}.1" if self.why_not_namespaces is None else "127.0.0.1"
        self.machines: list[Machine] = []

    def _network(self) -> None:
        for command in (["ip", "link", "add", self.bridge, "type", "bridge"],
                        ["ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge],
                        ["ip", "link", "set", self.bridge, "up"],
                        ["sysctl", "-qw", f"net.ipv4.conf.{self.bridge}.route_localnet=1"]):
            run(command)

    def make(self, api_url: str, studio: Path, extra_env: dict[str, dict[str, str]] | None = None) -> list[Machine]:
        if self.why_not_namespaces is None:
            self._network()
        for index in range(self.count):
            name = f"gpu-{chr(ord('a') + index)}"
            folder = self.root / name
            (folder / "tmp").mkdir(parents=True)
            env = {**clean_env(), "PREFECT_API_URL": api_url, "PREFECT_HOME": str(folder / "prefect"),
                   "TMPDIR": str(folder / "tmp"), "NIGHTSHIFT_PROJECT_DIR": str(studio),
                   **((extra_env or {}).get(name, {}))}
            netns = None
            if self.why_not_namespaces is None:
                netns = f"ns-{self.tag}-{name}"
                veth = f"nsv{self.tag}{index}"
                address = f"{self.subnet}.{11 + index}/24"
                run(["ip", "netns", "add", netns])
                for command in (["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns],
                                ["ip", "link", "set", veth, "master", self.bridge, "up"],
                                ["ip", "netns", "exec", netns, "ip", "addr", "add", address, "dev", "eth0"],
                                ["ip", "netns", "exec", netns, "ip", "link", "set", "eth0", "up"],
                                ["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"],
                                ["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"],
                                ["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"]):
                    run(command)
            else:
                env["NIGHTSHIFT_MACHINE"] = name
            self.machines.append(Machine(name, folder, env, netns))
        return self.machines

    def close(self) -> None:
        for machine in self.machines:
            machine.kill()
            if machine.netns is not None:
                subprocess.run(["ip", "netns", "del", machine.netns], capture_output=True, check=False)
        if self.why_not_namespaces is None:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


# ---------------------------------------------------------------------------------------------- the studio

STUDIO_TOML = PROJECT_TOML.replace("stable_s = 0", "stable_s = 0\npoll_s = 0.5\nlease_ttl_s = {lease_ttl_s}")
CORPUS = REPO / "examples" / "corpus"
# Two short scripts of our own beside the bundled four: six in the queue.
EXTRA_SCRIPTS = {
    "harbour_fog.md": "# Harbour Fog\n\n## Scene 1 — Quay\nFog rolls over the quay at dawn. A fisherman coils a "
                      "rope and looks out to sea.\n\n## Scene 2 — Boat\nA small boat slips its mooring and vanishes "
                      "into the grey.\n",
    "glasshouse.md": "# Glasshouse\n\n## Scene 1 — Garden\nRain drums on a Victorian glasshouse. A gardener repots "
                     "an orchid by lamplight.\n\n## Scene 2 — Path\nShe runs across the wet lawn to the house, the "
                     "orchid under her coat.\n",
}
SCRIPTS = ("courier.fountain", "lighthouse.fountain", "night_train.md", "paper_boat.txt", *EXTRA_SCRIPTS)


def make_studio(root: Path, lease_ttl_s: float) -> Path:
    """A studio folder with small clips (64x36: the code paths a 4K night takes, at CPU speed)."""
    (root / "inbox").mkdir(parents=True)
    (root / "nightshift.toml").write_text(STUDIO_TOML.format(lease_ttl_s=lease_ttl_s))
    return root


def drop_queue(studio: Path) -> None:
    """The six scripts, dropped into the inbox."""
    for name in SCRIPTS[:4]:
        shutil.copyfile(CORPUS / name, studio / "inbox" / name)
    for name, text in EXTRA_SCRIPTS.items():
        (studio / "inbox" / name).write_text(text, encoding="utf-8")


def studio_jobs(studio: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((studio / ".nightshift" / "jobs").glob("*.json"))]


def wait_for(what: str, until: Callable[[], T], timeout_s: float, machines: list[Machine], poll_s: float = 1.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = until()
        if value:
            return value
        time.sleep(poll_s)
    logs = "\n".join(f"--- {m.name}\n{m.logs()[-4000:]}" for m in machines)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")


# ---------------------------------------------------------------------------------------------- the server


def start_server(address: str, database_url: str, home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on PostgreSQL, its concurrency leases on disk; its API URL once it answers."""
    port = free_port()
    env = {**clean_env(), "PREFECT_HOME": str(home), "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
           "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}
    return start_prefect_server(port, env, log, timeout_s=240, host=address), f"http://{address}:{port}/api"


def prefect(argv: list[str], api_url: str, home: Path, cwd: Path = REPO, **env: str) -> str:
    """A `prefect` command as an operator types it (README), against the server."""
    full = {**clean_env(), "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home), **env}
    return run([sys.executable, "-m", "prefect", *argv], env=full, cwd=cwd).stdout


def worker_command(name: str) -> list[str]:
    """README: a worker per GPU machine, polling its own queue and the default one."""
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--work-queue", name,
            "--work-queue", "default", "--name", name]


def watcher_command() -> list[str]:
    """README: the inbox watcher, which claims drops and emits the intake deployment's event."""
    return [sys.executable, "-m", "nightshift.cli", "serve", "--events-only"]


def client_call(api: str, home: Path, code: str) -> str:
    """Python run against the server in a process of its own (the test's own process has no Prefect settings)."""
    env = {**clean_env(), "PREFECT_API_URL": api, "PREFECT_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout


def ready_queues(api: str, home: Path) -> set[str]:
    """The machine queues of the pool a worker has polled lately."""
    code = ("from prefect.client.orchestration import get_client\n"
            "with get_client(sync_client=True) as c:\n"
            f"    print(' '.join(q.name for q in c.read_work_queues(work_pool_name='{POOL}') "
            "if q.name != 'default' and q.status.value == 'READY'))")
    return set(client_call(api, home, code).split())


# ---------------------------------------------------------------------------------------------- README's steps


@dataclass
class Cluster:
    machines: Machines
    studio: Path
    server: subprocess.Popen
    api: str
    admin: Path  # the operator's PREFECT_HOME

    def start_night(self) -> None:
        """README: start the night now, on every machine."""
        prefect(["deployment", "run", "nightshift-night/night", "--param", "respect_window=false"], self.api,
                self.admin)

    def close(self) -> None:
        self.machines.close()
        stop(self.server)


def bring_up(root: Path, database_url: str, count: int, lease_ttl_s: float,
             machine_env: dict[str, dict[str, str]] | None = None, watchers: tuple[int, ...] = (0,)) -> Cluster:
    """README's "Several GPU machines", command by command: the server on PostgreSQL; once, the pool and the
    deployments (prefect.yaml, the studio named); on each machine its queue and a worker; the inbox watchers."""
    machines = Machines(root / "machines", count)
    studio = make_studio(root / "studio", lease_ttl_s)
    admin = root / "admin-prefect"
    server, api = start_server(machines.server_address, database_url, root / "server-prefect", root / "server.log")
    try:
        prefect(["work-pool", "create", POOL, "--type", "process"], api, admin)
        prefect(["--no-prompt", "deploy", "--all"], api, admin, NIGHTSHIFT_PROJECT_DIR=str(studio))
        for machine in machines.make(api, studio, machine_env):
            prefect(["work-queue", "create", machine.name, "--pool", POOL], api, admin)
            machine.start(worker_command(machine.name), "worker.log", cwd=studio)
        for index in watchers:
            machines.machines[index].start(watcher_command(), "watcher.log", cwd=studio)
    except BaseException:
        machines.close()
        stop(server)
        raise
    return Cluster(machines, studio, server, api, admin)
