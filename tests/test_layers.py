"""The house rules, read from the source: no module imports a layer above its own, no import cycles, and no
project import inside a function. Layers, lowest first (a module may import its own layer and those below):

  0 ground     nightshift.{errors, files, schemas, config, families, faults, templating, plan_files, edits, machine}
  1 stages     nightshift.agents.*, nightshift.renderers.*  (neither imports the other)
  2 records    nightshift.{planning_job, records, provenance, signing, credentials, seal, verify, reproduce,
               delivery, ladder}
  3 engine     nightshift.{engine, intake, steps, jobs, inbox, leases, queue, render_worker, render_child, gpu_lock,
               plan_render, review, versions, dailies, doctor, job_delivery, shot_loop, cuts, forecast, night_book,
               passes}
  4 flows      nightshift.flows.*
  5 commands   nightshift.{cli, cli_night, cli_queue, cli_provenance, cli_progress, cli_review, review_app, project}
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"nightshift": "nightshift", "agents": "nightshift.agents", "renderers": "nightshift.renderers",
           "flows": "nightshift.flows", "templates": "nightshift.templates"}
LAYERS = {
    0: {"nightshift", "nightshift.errors", "nightshift.files", "nightshift.schemas", "nightshift.config",
        "nightshift.families", "nightshift.faults", "nightshift.templating", "nightshift.plan_files",
        "nightshift.edits", "nightshift.templates", "nightshift.machine"},
    2: {"nightshift.planning_job", "nightshift.records", "nightshift.provenance", "nightshift.signing", "nightshift.credentials", "nightshift.seal",
        "nightshift.verify", "nightshift.reproduce", "nightshift.delivery", "nightshift.ladder"},
    3: {"nightshift.engine", "nightshift.intake", "nightshift.steps", "nightshift.jobs", "nightshift.inbox", "nightshift.leases", "nightshift.queue",
        "nightshift.render_worker", "nightshift.render_child", "nightshift.gpu_lock", "nightshift.plan_render",
        "nightshift.review", "nightshift.versions", "nightshift.dailies", "nightshift.doctor", "nightshift.job_delivery", "nightshift.shot_loop",
        "nightshift.cuts", "nightshift.forecast", "nightshift.night_book", "nightshift.passes"},
    5: {"nightshift.cli", "nightshift.cli_night", "nightshift.cli_queue", "nightshift.cli_provenance",
        "nightshift.cli_progress", "nightshift.cli_review", "nightshift.review_app", "nightshift.project"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def layer(module: str) -> int:
    for rank, names in LAYERS.items():
        if module in names:
            return rank
    if module.startswith(("nightshift.agents", "nightshift.renderers")):
        return 1
    if module.startswith("nightshift.flows"):
        return 4
    raise AssertionError(f"{module} has no layer: add it to tests/test_layers.py")


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported project module, inside a function?, line) for each project import of a file."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # typing-only imports never run
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [f"{child.module}.{a.name}" for a in child.names] + [child.module]
            for name in names:
                if name.split(".")[0] in ("nightshift", "agents", "renderers", "flows"):
                    found.append((name, in_function, child.lineno))
            visit(child, inside)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_no_layer_imports_one_above_no_cycle_no_hidden_import() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems = []
    for module, path in modules.items():
        for name, in_function, line in _imports(path):
            if name.split(".")[0] in ("agents", "renderers", "flows"):
                problems.append(f"{path.relative_to(REPO)}:{line}: imports {name} (use nightshift.{name})")
                continue
            target = _resolve(name, modules)
            if target is None or target == module:
                continue
            graph[module].add(target)
            if in_function:
                problems.append(f"{path.relative_to(REPO)}:{line}: project import inside a function: {name}")
            if layer(target) > layer(module):
                problems.append(f"{path.relative_to(REPO)}:{line}: {module} (layer {layer(module)}) imports "
                                f"{target} (layer {layer(target)})")
            if layer(module) == layer(target) == 1 and module.split(".")[1] != target.split(".")[1]:
                problems.append(f"{path.relative_to(REPO)}:{line}: {module} imports {target}: agents and renderers "
                                "are separate rooms")
    state: dict[str, int] = {}

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                problems.append("cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail
                                else f"cycle through {nxt}")
            elif nxt not in state:
                walk(nxt, [*trail, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            walk(module, [module])
    assert not problems, "\n".join(problems)
