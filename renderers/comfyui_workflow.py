"""ComfyUI workflows in API format ("Save (API)"): the ones shipped per model family, or a user's own with a
mapping (render.comfyui.mapping), checked against a server's /object_info, and filled in with one shot.

A workflow is `{node id: {"class_type": ..., "inputs": {...}}}`; an input is a literal or a link
`["<node id>", <output index>]`. Checking reads the server's own node table, so an unknown node type, an
input the node does not have, or a value outside its list or range names the workflow file, the node and the
fix before the night starts, not at 03:00.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nightshift.config import ComfyUIMapping
from nightshift.errors import NightshiftError
from nightshift.schemas import RenderSpec

SHIPPED = Path(__file__).resolve().parent / "comfyui_workflows"
OUTPUT_NODES = ("SaveVideo", "SaveWEBM", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveImage")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".gguf", ".bin", ".sft")
# Families whose ComfyUI nodes the server we checked against (0.3.64, ../shared/notes/comfyui.md) lacks.
UNSHIPPED = {"ltx2": "it needs a ComfyUI with the LTX-2 nodes (newer than 0.3.64, which has only LTX-Video 0.9's)",
             "hunyuan": "it needs a ComfyUI with the HunyuanVideo 1.5 nodes (newer than 0.3.64, which has only "
                        "HunyuanVideo 1.0's)"}


class WorkflowError(NightshiftError):
    """A workflow that cannot run on this server (or is not an API-format workflow at all)."""


@dataclass(frozen=True)
class Workflow:
    path: Path
    graph: dict[str, dict[str, Any]]
    mapping: ComfyUIMapping
    sha256: str
    needs: str = ""  # what a server must have, for a family whose nodes older servers lack

    def node_types(self) -> list[str]:
        return sorted({node["class_type"] for node in self.graph.values()})


def load_workflow(path: Path, mapping: ComfyUIMapping, needs: str = "") -> Workflow:
    """An API-format workflow file and its mapping; the shape checked, not yet the server."""
    try:
        raw = path.read_bytes()
        graph = json.loads(raw)
    except OSError as error:
        raise WorkflowError(f"{path}: cannot read the workflow ({error.strerror})", "set render.comfyui.workflow "
                            "to a file exported from ComfyUI with Save (API)") from None
    except ValueError as error:
        raise WorkflowError(f"{path}: not JSON ({error})", "export the workflow with Save (API)") from None
    if isinstance(graph, dict) and isinstance(graph.get("nodes"), list):
        raise WorkflowError(f"{path}: this is ComfyUI's editor format, not the API format",
                            "in ComfyUI, use Workflow > Export (API) (\"Save (API)\") and point render.comfyui.workflow at that file")
    if not isinstance(graph, dict) or not graph:
        raise WorkflowError(f"{path}: an API-format workflow is an object of nodes", "export it with Save (API)")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or not isinstance(
                node.get("inputs", {}), dict):
            raise WorkflowError(f"{path}: node {node_id!r} has no class_type or inputs", "export it with Save (API)")
    for field, node_id, name in _targets(mapping):
        if node_id not in graph:
            raise WorkflowError(f"{path}: the mapping sends {field} to node {node_id!r}, which this workflow does not have",
                                f"nodes here: {', '.join(sorted(graph))}; fix render.comfyui.mapping.{field}")
    if mapping.output not in graph:
        raise WorkflowError(f"{path}: the mapping's output node {mapping.output!r} is not in this workflow",
                            f"nodes here: {', '.join(sorted(graph))}; fix render.comfyui.mapping.output")
    return Workflow(path, graph, mapping, hashlib.sha256(raw).hexdigest(), needs)


def shipped_workflow(family: str, keyframes: bool = False) -> Workflow:
    """The workflow Nightshift ships for a family (comfyui_workflows/<family>.json, its mapping beside it);
    with `keyframes` (the shot has a first-frame image), the family's keyframe workflow where there is one."""
    path = SHIPPED / f"{family}.json"
    if keyframes and (SHIPPED / f"{family}_keyframes.json").is_file():
        path = SHIPPED / f"{family}_keyframes.json"
    if not path.is_file():
        why = UNSHIPPED.get(family, "")
        raise WorkflowError(f"no ComfyUI workflow is shipped for the {family} family" + (f": {why}" if why else ""),
                            "export your own from a ComfyUI that has its nodes, with Save (API), and set "
                            "render.comfyui.workflow and render.comfyui.mapping (README)")
    meta = json.loads(path.with_suffix(".mapping.json").read_text(encoding="utf-8"))
    return load_workflow(path, ComfyUIMapping.model_validate(meta["mapping"]), meta.get("needs", ""))


def _targets(mapping: ComfyUIMapping) -> list[tuple[str, str, str]]:
    return [(field, node, name) for field, targets in mapping.targets().items() for node, name in targets]


def _is_link(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _spec(entry: list) -> tuple[object, dict]:
    """(type or option list, options) of an /object_info input: V1 `[[options], {}]`, V3 `["COMBO", {"options"}]`."""
    kind = entry[0] if entry else None
    extra = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    if kind == "COMBO":
        return list(extra.get("options", [])), extra
    return kind, extra


def check_workflow(workflow: Workflow, object_info: dict[str, Any], server: str) -> list[str]:
    """What stops this workflow from running on `server`, each naming the file, the node and the fix."""
    problems: list[str] = []
    mapped = {(node, name) for _, node, name in _targets(workflow.mapping)}
    where = f"{workflow.path}"
    for node_id, node in workflow.graph.items():
        kind = node["class_type"]
        info = object_info.get(kind)
        if not info:
            need = f" ({workflow.needs})" if workflow.needs else ""
            problems.append(f"{where}: node {node_id}: {kind} is not a node type on {server}{need}; install the custom "
                            "node that provides it, or update ComfyUI")
            continue
        declared = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
        for name, value in node.get("inputs", {}).items():
            if name not in declared:
                problems.append(f"{where}: node {node_id} ({kind}) has no input {name!r} on {server}; inputs: "
                                f"{', '.join(sorted(declared))}")
                continue
            if _is_link(value):
                if value[0] not in workflow.graph:
                    problems.append(f"{where}: node {node_id} ({kind}).{name} links to node {value[0]!r}, which is "
                                    "not in the workflow; export it again with Save (API)")
                continue
            if (node_id, name) in mapped:
                continue  # filled in per shot
            problems += _check_value(where, node_id, kind, name, value, declared[name], server)
        for name in info.get("input", {}).get("required", {}):
            if name not in node.get("inputs", {}) and (node_id, name) not in mapped:
                problems.append(f"{where}: node {node_id} ({kind}) lacks its required input {name!r}")
    for field, node_id, name in _targets(workflow.mapping):
        kind = workflow.graph[node_id]["class_type"]
        info = object_info.get(kind) or {}
        declared = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
        if info and name not in declared:
            problems.append(f"{where}: render.comfyui.mapping.{field} = \"{node_id}.{name}\": {kind} has no input "
                            f"{name!r}; inputs: {', '.join(sorted(declared))}")
    output = workflow.graph[workflow.mapping.output]["class_type"]
    if output in object_info and not object_info[output].get("output_node"):
        problems.append(f"{where}: render.comfyui.mapping.output is node {workflow.mapping.output} ({output}), which "
                        f"saves nothing; point it at a {' or '.join(OUTPUT_NODES)} node")
    return problems


def _check_value(where: str, node_id: str, kind: str, name: str, value: object, entry: list, server: str) -> list[str]:
    declared, extra = _spec(entry)
    if isinstance(declared, list):
        if kind == "LoadImage" or str(value).lower().endswith(MODEL_SUFFIXES):
            return []  # uploads are checked when uploaded, model files by missing_models
        if value not in declared:
            shown = ", ".join(map(str, declared[:12])) + (" ..." if len(declared) > 12 else "")
            return [f"{where}: node {node_id} ({kind}).{name} = {value!r} is not one of {server}'s values: {shown}"]
        return []
    if declared in ("INT", "FLOAT") and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = extra.get("min"), extra.get("max")
        if low is not None and value < low or high is not None and value > high:
            return [f"{where}: node {node_id} ({kind}).{name} = {value} is outside {low}..{high}"]
    return []


def fill_workflow(workflow: Workflow, spec: RenderSpec, uploads: dict[str, str], prefix: str) -> dict[str, Any]:
    """The graph for one shot: the mapped inputs set from the spec (uploads: field -> the name the server
    gave the uploaded image), and the output node's filename prefix set to this shot's own."""
    graph = copy.deepcopy(workflow.graph)
    values: dict[str, object] = {
        "prompt": spec.prompt, "negative_prompt": spec.negative_prompt, "seed": spec.seed, "width": spec.width,
        "height": spec.height, "frames": spec.num_frames, "fps": spec.fps, "steps": spec.steps, **uploads}
    if spec.loras:
        values["lora_name"], values["lora_strength"] = Path(spec.loras[0].path).name, spec.loras[0].weight
    for field, node_id, name in _targets(workflow.mapping):
        if field in values:
            graph[node_id].setdefault("inputs", {})[name] = values[field]
    for field in ("first_keyframe", "last_keyframe"):  # a keyframe this shot has not got: its loader goes, and the
        if field in uploads:                               # (optional) inputs it fed, e.g. a first-frame-only shot
            continue
        for node_id, _ in workflow.mapping.targets().get(field, []):
            if graph.get(node_id, {}).get("class_type") == "LoadImage":
                del graph[node_id]
                for node in graph.values():
                    node["inputs"] = {k: v for k, v in node.get("inputs", {}).items()
                                      if not (_is_link(v) and v[0] == node_id)}
    output = graph[workflow.mapping.output].setdefault("inputs", {})
    if "filename_prefix" in output or graph[workflow.mapping.output]["class_type"] in OUTPUT_NODES:
        output["filename_prefix"] = prefix
    return graph


def missing_models(workflow: Workflow, object_info: dict[str, Any], server: str) -> list[str]:
    """The model and LoRA files the workflow names that the server's model folders do not hold."""
    problems = []
    for node_id, node in workflow.graph.items():
        declared = {**(object_info.get(node["class_type"]) or {}).get("input", {}).get("required", {}),
                    **(object_info.get(node["class_type"]) or {}).get("input", {}).get("optional", {})}
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES) and name in declared:
                options, _ = _spec(declared[name])
                if isinstance(options, list) and value not in options:
                    problems.append(f"{workflow.path}: node {node_id} ({node['class_type']}).{name}: {value} is not in "
                                    f"{server}'s model folders; put it in ComfyUI's models/ folder (or pick one it has)")
    return problems


def model_files(graph: dict[str, Any]) -> list[str]:
    """The model and LoRA file names a graph names (checkpoints, UNets, VAEs, text encoders, LoRAs)."""
    return sorted({value for node in graph.values() for value in node.get("inputs", {}).values()
                   if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES)})
