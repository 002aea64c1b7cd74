"""The ComfyUI renderer: each shot through the user's own ComfyUI server, its models and workflows, driven
as its HTTP and WebSocket API answers (measured: ../shared/notes/comfyui.md).

One shot: upload the keyframes (always using the name the server returns), fill the workflow, choose the
prompt id and write it into the job's work folder *before* submitting, read `node_errors` even on a 200,
follow /ws for progress until `executing` with `node: null` for our prompt, fetch the output through /view
(video, listed under "images" with "animated", or an image sequence), decode and check it (frames, size,
rate), then upscale, encode and sign it like any other shot.

ComfyUI keeps its queue and history in memory only. So a shot that finds its prompt id already written
asks the server first: finished (in /history) is collected, queued or running is waited for, and neither is
submitted again; a server that goes away mid-shot is waited for (render.comfyui.reconnect_s) and asked the
same. A previous run's finished file for the same graph (the output prefix names the graph) is collected
instead of rendering it again. A stop or a timeout interrupts only our prompt.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from PIL import Image
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from nightshift import faults
from nightshift.config import ComfyUIMapping, RenderDefaults
from nightshift.errors import NightshiftError, RenderServerDown, is_disk_full
from nightshift.files import now_utc, sha256_file, write_atomic
from nightshift.machine import machine_name
from nightshift.renderers.comfyui_workflow import (Workflow, WorkflowError, check_workflow, fill_workflow, load_workflow,
                                                   missing_models, model_files, shipped_workflow)
from nightshift.renderers.continuity import continuity_record, end_frame, keep_last_frame
from nightshift.renderers.encode import EncodeSettings, encode_frames
from nightshift.renderers.keyframes import prepare_keyframes
from nightshift.renderers.shots import ClipFinish, ShotJob
from nightshift.renderers.upscale import UpscaleSettings
from nightshift.schemas import ClipRecord, RenderSpec, spec_sha256

UPLOAD_FOLDER = "nightshift"
FOLLOW_POLL_S = 3.0
DOWN = (httpx.TransportError, WebSocketException, OSError)  # the server is not (or no longer) answering
EXTENSIONS = {"SaveVideo": "mp4", "SaveWEBM": "webm", "SaveAnimatedWEBP": "webp", "SaveAnimatedPNG": "png"}


class ComfyUIError(NightshiftError):
    """ComfyUI refused or failed a shot (the report names the node and what the server said)."""


class ComfyUIClient:
    """ComfyUI's routes, as a real server answers them. Every call raises a DOWN error when it does not."""

    def __init__(self, url: str, client_id: str) -> None:
        self.url, self.client_id = url.rstrip("/"), client_id
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(60.0, connect=5.0))

    def system_stats(self) -> dict[str, Any]:
        return self._json(self.http.get("/system_stats"))

    def object_info(self) -> dict[str, Any]:
        return self._json(self.http.get("/object_info"))

    def upload_image(self, path: Path) -> str:
        """Upload a keyframe; the name to put in LoadImage ("nightshift/<the name the server chose>")."""
        with path.open("rb") as handle:
            reply = self.http.post("/upload/image", files={"image": (path.name, handle, "image/png")},
                                   data={"subfolder": UPLOAD_FOLDER, "type": "input"})
        if reply.status_code != 200:
            raise ComfyUIError(f"{self.url}: uploading {path.name} failed (HTTP {reply.status_code})",
                               "check the server's log and its input/ folder")
        named = reply.json()
        return f"{named['subfolder']}/{named['name']}" if named.get("subfolder") else named["name"]

    def submit(self, graph: dict[str, Any], prompt_id: str, workflow: Path) -> None:
        reply = self.http.post("/prompt", json={"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id})
        body = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
        errors = body.get("node_errors") or {}
        if reply.status_code == 200 and not errors:
            return
        if reply.status_code == 200:  # partly valid: the other outputs run; ours may not, so take it back
            self.forget(prompt_id)
        raise ComfyUIError(f"{self.url} refused {workflow.name}: " + describe_refusal(body, reply), "fix the workflow "
                           "or render.comfyui.mapping (the node ids are the workflow's), then run again")

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        entry = self._json(self.http.get(f"/history/{prompt_id}"))
        return entry.get(prompt_id)

    def queued(self, prompt_id: str) -> bool:
        queue = self._json(self.http.get("/queue"))
        return any(item[1] == prompt_id for key in ("queue_running", "queue_pending") for item in queue.get(key, []))

    def forget(self, prompt_id: str) -> None:
        """Interrupt our prompt if it runs, and take it out of the queue if it waits; nobody else's."""
        self.http.post("/interrupt", json={"prompt_id": prompt_id})
        self.http.post("/queue", json={"delete": [prompt_id]})

    def view(self, image: dict[str, str], target: Path) -> bool:
        """Download one output file; False when the server has no such file."""
        params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": image.get("type", "output")}
        with self.http.stream("GET", "/view", params=params) as reply:
            if reply.status_code == 404:
                return False
            if reply.status_code != 200:
                raise ComfyUIError(f"{self.url}: /view {image['filename']} answered HTTP {reply.status_code}", "")
            partial = target.with_name(f".{target.name}.partial")
            with partial.open("wb") as handle:
                for chunk in reply.iter_bytes(1 << 20):
                    handle.write(chunk)
            partial.replace(target)
        return True

    def socket_url(self, client_id: str | None = None) -> str:
        """Events of a prompt go only to the socket of the client id it was submitted with (a later socket with
        that id takes over): a restarted run listens as the run that submitted it."""
        return self.url.replace("http", "ws", 1) + f"/ws?clientId={client_id or self.client_id}"

    @staticmethod
    def _json(reply: httpx.Response) -> dict[str, Any]:
        reply.raise_for_status()
        return reply.json()


def describe_refusal(body: dict[str, Any], reply: httpx.Response) -> str:
    """ComfyUI's error and node_errors, one line per problem: node id, type, input, what was wrong."""
    if not body:
        return f"HTTP {reply.status_code}: {reply.text[:300]}"
    lines = []
    error = body.get("error") or {}
    if error and error.get("type") != "prompt_outputs_failed_validation":
        lines.append(f"{error.get('message', '')} {error.get('details', '')}".strip())
    for node_id, problem in (body.get("node_errors") or {}).items():
        for item in problem.get("errors", []):
            lines.append(f"node {node_id} ({problem.get('class_type')}): {item.get('message')}: {item.get('details')}")
    return "; ".join(lines) or json.dumps(body)[:300]


class ComfyUIShotRenderer:
    name = "comfyui"

    def __init__(self, settings: RenderDefaults, upscale: UpscaleSettings, encode: EncodeSettings,
                 recorded: dict[str, Any] | None = None) -> None:
        """`recorded`: a clip record's `comfyui` (nightshift reproduce): its exact graph is submitted again."""
        self.settings, self.options, self.recorded = settings, settings.comfyui, recorded
        self.finish = ClipFinish(upscale, encode)
        self.client_id = uuid.uuid4().hex
        self.server: ComfyUIClient | None = None
        self.system: dict[str, Any] = {}
        self.object_info: dict[str, Any] = {}
        self.checked: dict[Path, Workflow] = {}
        self.in_flight: str | None = None

    # ------------------------------------------------------------------ the server and its workflows

    def connect(self, deadline: float) -> ComfyUIClient:
        """The first configured server that answers, waiting for one until `deadline`."""
        delay = 1.0
        while True:
            for url in self.options.urls():
                client = ComfyUIClient(url, self.client_id)
                try:
                    self.system = client.system_stats()
                    if self.server is None or self.server.url != client.url or not self.object_info:
                        self.object_info, self.checked = client.object_info(), {}
                    self.server = client
                    return client
                except DOWN:
                    continue
            if time.monotonic() + delay > deadline:
                raise RenderServerDown(f"ComfyUI does not answer at {', '.join(self.options.urls())} (waited "
                                       f"{self.options.reconnect_s:g} s)")
            log(f"ComfyUI not answering at {', '.join(self.options.urls())}; trying again in {delay:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 30.0)

    def workflow_for(self, spec: RenderSpec, keyframes: bool) -> Workflow:
        if self.options.workflow is not None:
            assert self.options.mapping is not None  # the settings require it
            workflow = load_workflow(self.options.workflow, self.options.mapping)
        else:
            workflow = shipped_workflow(spec.family, keyframes)
        if workflow.path not in self.checked:
            where = self.server.url if self.server else "the server"
            problems = check_workflow(workflow, self.object_info, where) + missing_models(workflow, self.object_info, where)
            if problems:
                raise WorkflowError(f"{workflow.path} cannot run on this ComfyUI:\n  " + "\n  ".join(problems),
                                    workflow.needs or "fix the workflow or render.comfyui.mapping, then run again")
            self.checked[workflow.path] = workflow
        return self.checked[workflow.path]

    # ------------------------------------------------------------------ one shot

    def render(self, job: ShotJob) -> ClipRecord:
        spec, started, t0 = job.spec, now_utc(), time.perf_counter()
        faults.reached("render")
        deadline = time.monotonic() + self.options.reconnect_s
        server = self.connect(deadline)
        keyframes, notes = prepare_keyframes(spec, job.plan_folder, job.keyframes_dir, None)
        prefix = f"nightshift/{spec.shot_id}-{spec_sha256(spec)[:12]}"
        uploads: dict[str, str] = {}
        if self.recorded is not None:  # the graph as it was sent; a prefix of its own, so it is rendered, not found
            output = str(self.recorded["output_node"])
            graph = copy.deepcopy(self.recorded["graph"])
            prefix = graph[output]["inputs"]["filename_prefix"] = f"{prefix}-reproduced-{uuid.uuid4().hex[:8]}"
            workflow = Workflow(Path(str(self.recorded["workflow"])), graph, ComfyUIMapping(output=output),
                                str(self.recorded["workflow_sha256"]))
        else:
            workflow = self.workflow_for(spec, keyframes=any(k.frame_index == 0 for k in keyframes))
            for key in keyframes:
                field = ("first_keyframe" if key.frame_index == 0 else "last_keyframe"
                         if key.frame_index == spec.num_frames - 1 else None)
                if field and field in workflow.mapping.targets():
                    uploads[field] = server.upload_image(key.path)
            graph = fill_workflow(workflow, spec, uploads, prefix)
        graph_sha256 = hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()
        outcome = self._run(job, server, workflow, graph, graph_sha256, prefix, deadline)
        server = self.server or server
        native = job.work_dir / f"{spec.shot_id}.native.mp4"
        frames = encode_frames(keep_last_frame(checked_frames(outcome["files"], spec, outcome["animated"]),
                                               end_frame(job.keyframes_dir, spec.shot_id)), native, spec.fps,
                               self.finish.encode)
        for path in outcome["files"]:
            path.unlink(missing_ok=True)
        final = self.finish.native_to_4k(job, native)
        (job.work_dir / f"{spec.shot_id}.comfyui.json").unlink(missing_ok=True)
        devices = [{k: d.get(k) for k in ("name", "type", "index", "vram_total")} for d in self.system.get("devices", [])]
        if outcome["source"] != "rendered":
            notes.append(f"ComfyUI output {outcome['source']}")
        return ClipRecord(
            shot_id=spec.shot_id, backend="comfyui", animatic=False, model_id=spec.model_id, pipeline=workflow.path.name,
            tier="comfyui", device=", ".join(str(d["name"]) for d in devices) or "comfyui", seed=spec.seed,
            steps=spec.steps, width=self.finish.upscale.width, height=self.finish.upscale.height, fps=spec.fps,
            frames=frames, keyframes=[f"keyframes/{k.path.name}" for k in keyframes],
            conditioning=sorted(uploads), upscaled_to=self.finish.describe(), encoded_as=self.finish.encode.describe(),
            upscale_settings=self.finish.settings_record(), encode_settings=asdict(self.finish.encode),
            file=f"shots/{final.name}", sha256=(digest := sha256_file(final)), rendered_sha256=digest,
            spec_sha256=spec_sha256(spec), started=started, finished=now_utc(),
            seconds=round(time.perf_counter() - t0, 3), rendered_on=machine_name(), notes=notes,
            comfyui={"server": server.url, "version": self.system.get("system", {}).get("comfyui_version"),
                     "devices": devices, "workflow": str(workflow.path), "workflow_sha256": workflow.sha256,
                     "node_types": workflow.node_types(), "model_files": model_files(graph), "graph": graph,
                     "output_node": workflow.mapping.output,
                     "graph_sha256": graph_sha256, "prompt_id": outcome["prompt_id"], "output": outcome["source"],
                     "from_cache": outcome["source"] == "from ComfyUI's cache"},
            **continuity_record(spec, job.keyframes_dir),
        )

    def _run(self, job: ShotJob, server: ComfyUIClient, workflow: Workflow, graph: dict[str, Any], graph_sha256: str,
             prefix: str, deadline: float) -> dict[str, Any]:
        """Submit (or find again) this shot's prompt and wait for its output files, across server restarts."""
        state_path = job.work_dir / f"{job.spec.shot_id}.comfyui.json"
        state = _read_state(state_path, graph_sha256)
        output_node = workflow.mapping.output
        kind = graph[output_node]["class_type"]
        while True:
            try:
                queued = False
                if state is not None:
                    entry = server.history(state["prompt_id"])
                    if entry is None:
                        queued = server.queued(state["prompt_id"])
                        if not queued:  # it may have finished between the two questions
                            entry = server.history(state["prompt_id"])
                    if entry is not None:
                        return self._collect(job, server, entry, state["prompt_id"], output_node, cached=False,
                                             source="collected after a reconnect")
                if not queued:
                    earlier = self._earlier_file(job, server, prefix, kind)
                    if earlier is not None:
                        return earlier
                    state = {"prompt_id": str(uuid.uuid4()), "server": server.url, "graph_sha256": graph_sha256,
                             "client_id": self.client_id}
                    write_atomic(state_path, json.dumps(state))  # written before the server hears of it
                    source = "rendered"
                    with connect(server.socket_url(), open_timeout=10, max_size=None) as socket:
                        server.submit(graph, state["prompt_id"], workflow.path)
                        self.in_flight = state["prompt_id"]
                        cached = self._follow(socket, server, state["prompt_id"], output_node, job.spec.shot_id)
                else:  # still queued or running from before: waited for, never submitted again
                    source = "collected after a reconnect"
                    with connect(server.socket_url(state.get("client_id")), open_timeout=10, max_size=None) as socket:
                        self.in_flight = state["prompt_id"]
                        cached = self._follow(socket, server, state["prompt_id"], output_node, job.spec.shot_id)
                self.in_flight = None
                entry = _history_when_written(server, state["prompt_id"])
                return self._collect(job, server, entry, state["prompt_id"], output_node, cached, source)
            except DOWN as error:
                if isinstance(error, OSError) and is_disk_full(error):
                    raise  # our own disk, not the server: the queue waits for space (DiskFull in the parent)
                log(f"{job.spec.shot_id}: ComfyUI at {server.url} went away ({type(error).__name__}); waiting for it")
                server = self.connect(deadline)

    def _follow(self, socket: Any, server: ComfyUIClient, prompt_id: str, output_node: str, shot_id: str) -> bool:
        """Our prompt's messages until `executing` with node null; True when our output came from the cache. A
        quiet socket is backed by /history every few seconds (a socket that joins mid-run hears no replay)."""
        cached, last_said = False, 0.0
        while True:
            try:
                message = socket.recv(timeout=FOLLOW_POLL_S)
            except TimeoutError:
                if server.history(prompt_id) is not None:
                    return cached
                continue
            if isinstance(message, bytes):
                continue  # previews
            event = json.loads(message)
            kind, data = event.get("type"), event.get("data") or {}
            if data.get("prompt_id") not in (prompt_id, None) or kind == "status":
                continue
            if kind == "execution_cached" and output_node in data.get("nodes", []):
                cached = True
            elif kind == "progress" and time.monotonic() - last_said > 5:
                log(f"{shot_id}: ComfyUI node {data.get('node')} {data.get('value')}/{data.get('max')}")
                last_said = time.monotonic()
            elif kind == "execution_error":
                raise ComfyUIError(f"{shot_id}: ComfyUI failed in node {data.get('node_id')} ({data.get('node_type')}): "
                                   f"{data.get('exception_type')}: {str(data.get('exception_message', '')).strip()}",
                                   "see the ComfyUI log; a missing model file or a custom node error shows there")
            elif kind == "execution_interrupted":
                raise ComfyUIError(f"{shot_id}: interrupted on the ComfyUI server (node {data.get('node_id')})",
                                   "someone pressed Cancel in ComfyUI; the shot is tried again")
            elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return cached

    def _collect(self, job: ShotJob, server: ComfyUIClient, entry: dict[str, Any], prompt_id: str, output_node: str,
                 cached: bool, source: str) -> dict[str, Any]:
        status = entry.get("status", {})
        if status.get("status_str") == "error":
            failure = next((m[1] for m in status.get("messages", []) if m[0] in ("execution_error",
                                                                                  "execution_interrupted")), {})
            raise ComfyUIError(f"{job.spec.shot_id}: ComfyUI failed in node {failure.get('node_id')} "
                               f"({failure.get('node_type')}): {str(failure.get('exception_message', 'interrupted')).strip()}",
                               "see the ComfyUI log; the shot is tried again")
        if any(m[0] == "execution_cached" and output_node in m[1].get("nodes", []) for m in status.get("messages", [])):
            cached, source = True, "from ComfyUI's cache"
        output = entry.get("outputs", {}).get(output_node)
        if not output or not output.get("images"):
            raise ComfyUIError(f"{job.spec.shot_id}: ComfyUI finished but node {output_node} saved nothing",
                               "check render.comfyui.mapping.output names the node that saves the shot")
        files = []
        for index, image in enumerate(output["images"]):
            target = job.work_dir / f"{job.spec.shot_id}.comfyui-{index:05d}{Path(image['filename']).suffix}"
            if not server.view(image, target):
                raise ComfyUIError(f"{job.spec.shot_id}: ComfyUI lists {image['filename']} but /view has no such file",
                                   "its output/ folder was cleaned while the shot ran; the shot is rendered again")
            files.append(target)
        return {"files": files, "animated": bool((output.get("animated") or [False])[0]), "prompt_id": prompt_id,
                "source": source if not cached else "from ComfyUI's cache"}

    def _earlier_file(self, job: ShotJob, server: ComfyUIClient, prefix: str, kind: str) -> dict[str, Any] | None:
        """A finished file an earlier run of this exact graph left (the prefix names the graph), if it decodes
        to the whole shot: collected instead of rendered again."""
        extension = EXTENSIONS.get(kind)
        if extension is None:
            return None  # an image sequence cannot be told apart from a half-finished one
        folder, stem = prefix.rsplit("/", 1)
        target = job.work_dir / f"{job.spec.shot_id}.comfyui-earlier.{extension}"
        for counter in range(1, 6):
            image = {"filename": f"{stem}_{counter:05d}_.{extension}", "subfolder": folder, "type": "output"}
            if not server.view(image, target):
                break
            try:
                if sum(1 for _ in checked_frames([target], job.spec, animated=True)) == job.spec.num_frames:
                    return {"files": [target], "animated": True, "prompt_id": None,
                            "source": f"collected from an earlier run's file {image['filename']}"}
            except (ComfyUIError, av.FFmpegError):
                continue
        target.unlink(missing_ok=True)
        return None

    def abandon(self) -> None:
        """A stop or a timeout: interrupt our prompt (and only ours) and take it off the queue."""
        if self.in_flight is not None and self.server is not None:
            try:
                self.server.forget(self.in_flight)
            except DOWN:
                pass


def checked_frames(files: list[Path], spec: RenderSpec, animated: bool) -> Iterator[np.ndarray]:
    """The output's frames, one at a time, checked against the spec: size, count, and rate for a video."""
    count = 0
    for path in files:
        if animated:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                rate = float(stream.average_rate or stream.guessed_rate or 0)
                if rate and abs(rate - spec.fps) > 0.01:
                    raise ComfyUIError(f"{spec.shot_id}: ComfyUI's clip runs at {rate:g} fps, the shot at {spec.fps:g}",
                                       "map the shot's fps to the workflow's frame-rate input (render.comfyui.mapping.fps)")
                for frame in container.decode(stream):
                    count += 1
                    yield _sized(frame.to_ndarray(format="rgb24"), spec)
        else:
            with Image.open(path) as image:
                count += 1
                yield _sized(np.asarray(image.convert("RGB")), spec)
    if count != spec.num_frames:
        raise ComfyUIError(f"{spec.shot_id}: ComfyUI gave {count} frames, the shot needs {spec.num_frames}",
                           "map the shot's frame count to the workflow's length input (render.comfyui.mapping.frames)")


def _sized(frame: np.ndarray, spec: RenderSpec) -> np.ndarray:
    if frame.shape[1] != spec.width or frame.shape[0] != spec.height:
        raise ComfyUIError(f"{spec.shot_id}: ComfyUI gave {frame.shape[1]}x{frame.shape[0]} frames, the shot is "
                           f"{spec.width}x{spec.height}", "map width and height in render.comfyui.mapping")
    return frame


def _read_state(path: Path, graph_sha256: str) -> dict[str, str] | None:
    """The prompt an earlier attempt submitted for this very graph, if any."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("graph_sha256") != graph_sha256:
        return None
    for key in ("prompt_id", "client_id"):  # read from disk, then put in URLs: only the UUIDs we wrote
        try:
            uuid.UUID(str(state.get(key)))
        except ValueError:
            return None
    return state


def _history_when_written(server: ComfyUIClient, prompt_id: str, wait_s: float = 5.0) -> dict[str, Any]:
    """execution_success is sent before the history entry is stored: look again briefly."""
    deadline = time.monotonic() + wait_s
    while (entry := server.history(prompt_id)) is None:
        if time.monotonic() > deadline:
            raise ComfyUIError(f"ComfyUI finished prompt {prompt_id} but has no history of it", "")
        time.sleep(0.1)
    return entry


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # the render child's stderr is the night's log
