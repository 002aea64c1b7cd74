"""A ComfyUI server double that answers as a real one does (../shared/notes/comfyui.md, measured against
ComfyUI 0.3.64), for the tests of the ComfyUI renderer. It runs as its own process, so a test can kill it
and start it again (a restart forgets the queue, the history and the cache, as ComfyUI does):

    python -m tests.comfyui_double --port P --root DIR [--node-delay S]

Routes (also under /api): /system_stats, /object_info (the recorded one; LoadImage lists input/'s top-level
files), /object_info/{class}, GET/POST /prompt with ComfyUI's validation and its error shapes (partial
validity answers 200 with node_errors), /queue (pending unsorted), /interrupt, /history, /view,
/upload/image (renaming, deduplication), and /ws (events only to the prompt's client id, in the measured
order, `executing` with node null last). The model-free nodes run for real on small frames: LoadImage,
EmptyImage, RepeatImageBatch, ImageScale, CreateVideo, SaveVideo, SaveImage. `--node-delay` stands for the
seconds a GPU spends in each node. Every prompt executed is appended to DIR/executed.log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import av
import numpy as np
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

# The whole GET /object_info of a real ComfyUI 0.3.64 (recorded: ../shared/notes/comfyui.md), kept beside the tests.
OBJECT_INFO = Path(__file__).resolve().parent / "comfyui-object_info.json"
RUNNABLE = {"LoadImage", "EmptyImage", "RepeatImageBatch", "ImageScale", "CreateVideo", "SaveVideo", "SaveImage"}


def _empty(status: int) -> Response:
    return Response(status_code=status, headers={"Content-Length": "0"})


class Interrupted(Exception):
    pass


class Double:
    def __init__(self, root: Path, node_delay: float) -> None:
        self.root, self.node_delay = root, node_delay
        self.input, self.output = root / "input", root / "output"
        self.input.mkdir(parents=True, exist_ok=True)
        self.output.mkdir(parents=True, exist_ok=True)
        self.info: dict[str, Any] = json.loads(OBJECT_INFO.read_text(encoding="utf-8"))
        self.lock = threading.Condition()
        self.pending: list[list] = []  # a heap, as ComfyUI keeps it
        self.running: list | None = None
        self.history: dict[str, dict] = {}
        self.counter = 0
        self.cache: dict[str, dict] = {}  # graph hash -> outputs of its last run
        self.interrupt_id: str | None = None
        self.sockets: dict[str, WebSocket] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ messages

    def send(self, client_id: str | None, kind: str, data: dict) -> None:
        targets = list(self.sockets.values()) if client_id is None else [self.sockets[client_id]] if client_id in self.sockets else []
        for socket in targets:
            if self.loop is not None:
                asyncio.run_coroutine_threadsafe(self._send(socket, {"type": kind, "data": data}), self.loop)

    @staticmethod
    async def _send(socket: WebSocket, message: dict) -> None:
        try:
            await socket.send_text(json.dumps(message))
        except Exception:  # noqa: BLE001 - a socket that went away
            pass

    def status(self) -> None:
        remaining = len(self.pending) + (1 if self.running else 0)
        self.send(None, "status", {"status": {"exec_info": {"queue_remaining": remaining}}})

    # ------------------------------------------------------------------ validation

    def inputs_of(self, kind: str) -> dict[str, list]:
        spec = self.info[kind]["input"]
        return {**spec.get("required", {}), **spec.get("optional", {})}

    def validate(self, prompt: dict) -> tuple[list[str], dict]:
        """Valid output node ids, node_errors (ComfyUI's shapes)."""
        outputs = [nid for nid, node in prompt.items() if self.info[node["class_type"]].get("output_node")]
        node_errors: dict[str, dict] = {}
        good = []
        for out in outputs:
            failing = self._validate_tree(prompt, out, set())
            if failing:
                for nid, errors in failing.items():
                    entry = node_errors.setdefault(nid, {"errors": errors, "dependent_outputs": [],
                                                         "class_type": prompt[nid]["class_type"]})
                    entry["dependent_outputs"].append(out)
            else:
                good.append(out)
        return good, node_errors

    def _validate_tree(self, prompt: dict, nid: str, seen: set) -> dict[str, list]:
        if nid in seen:
            return {}
        seen.add(nid)
        node = prompt[nid]
        kind = node["class_type"]
        errors: list[dict] = []
        failing: dict[str, list] = {}
        required = self.info[kind]["input"].get("required", {})
        declared = self.inputs_of(kind)
        values = node.get("inputs", {})
        for name in required:
            if name not in values:
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": name, "extra_info": {"input_name": name}})
        for name, value in values.items():
            if name not in declared:
                continue  # ComfyUI ignores inputs a node does not declare
            entry = declared[name]
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                source = str(value[0])
                if not isinstance(value[0], str) or source not in prompt:
                    errors.append({"type": "exception_during_validation", "message": "Exception when validating node",
                                   "details": f"'{value[0]}'", "extra_info": {"exception_type": "KeyError"}})
                    continue
                produced = self.info[prompt[source]["class_type"]]["output"]
                if value[1] >= len(produced):
                    errors.append({"type": "exception_during_validation", "message": "Exception when validating node",
                                   "details": "tuple index out of range", "extra_info": {"exception_type": "IndexError"}})
                    continue
                wanted = entry[0]
                if isinstance(wanted, str) and wanted not in ("*", produced[value[1]]) and wanted != "COMBO":
                    errors.append({"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                                   "details": f"{name}, received_type({produced[value[1]]}) mismatch input_type({wanted})",
                                   "extra_info": {"input_name": name, "received_type": produced[value[1]],
                                                  "linked_node": value}})
                    continue
                failing.update(self._validate_tree(prompt, source, seen))
                continue
            problem = self._check_literal(kind, name, value, entry)
            if problem:
                errors.append(problem)
            elif isinstance(value, str) and entry[0] == "INT":
                values[name] = int(value)
        if errors:
            failing[nid] = errors
        return failing

    def _check_literal(self, kind: str, name: str, value: object, entry: list) -> dict | None:
        wanted = entry[0]
        extra = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
        options = wanted if isinstance(wanted, list) else extra.get("options") if wanted == "COMBO" else None
        if kind == "LoadImage" and name == "image":
            if not (self.input / str(value).split(" [")[0]).is_file():
                return {"type": "custom_validation_failed", "message": "Custom validation failed for node",
                        "details": f"image - Invalid image file: {value}", "extra_info": {"input_name": name}}
            return None
        if options is not None:
            if value not in options:
                return {"type": "value_not_in_list", "message": "Value not in list",
                        "details": f"{name}: '{value}' not in {options}",
                        "extra_info": {"input_name": name, "input_config": entry, "received_value": value}}
            return None
        if wanted in ("INT", "FLOAT"):
            try:
                number = int(value) if wanted == "INT" else float(value)
            except (TypeError, ValueError):
                return {"type": "invalid_input_type", "message": f"Failed to convert an input value to a {wanted} value",
                        "details": f"{name}, {value}", "extra_info": {"input_name": name, "received_value": value}}
            if "min" in extra and number < extra["min"]:
                return {"type": "value_smaller_than_min", "message": f"Value {number} smaller than min of {extra['min']}",
                        "details": name, "extra_info": {"input_name": name, "received_value": value}}
            if "max" in extra and number > extra["max"]:
                return {"type": "value_bigger_than_max", "message": f"Value {number} bigger than max of {extra['max']}",
                        "details": name, "extra_info": {"input_name": name, "received_value": value}}
        return None

    # ------------------------------------------------------------------ execution

    def worker(self) -> None:
        while True:
            with self.lock:
                while not self.pending:
                    self.lock.wait()
                item = heapq.heappop(self.pending)
                self.running = item
            self.status()
            try:
                self.execute(item)
            finally:
                with self.lock:
                    self.running = None
                self.status()

    def execute(self, item: list) -> None:
        number, prompt_id, prompt, extra, outputs = item
        client = extra.get("client_id")
        now = lambda: int(time.time() * 1000)  # noqa: E731
        messages = [["execution_start", {"prompt_id": prompt_id, "timestamp": now()}]]
        self.send(client, "execution_start", messages[-1][1])
        key = hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()
        cached = self.cache.get(key)
        nodes_cached = list(prompt) if cached else []
        messages.append(["execution_cached", {"nodes": nodes_cached, "prompt_id": prompt_id, "timestamp": now()}])
        self.send(client, "execution_cached", messages[-1][1])
        results: dict[str, dict] = {}
        try:
            if cached:
                results = cached
                for out, ui in cached.items():
                    self.send(client, "executed", {"node": out, "display_node": out, "output": ui, "prompt_id": prompt_id})
            else:
                values: dict[str, tuple] = {}
                for nid in self.order(prompt, outputs):
                    if self.interrupt_id in (prompt_id, "*"):
                        self.interrupt_id = None
                        raise Interrupted(nid)
                    self.send(client, "executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
                    time.sleep(self.node_delay)
                    try:
                        values[nid], ui = self.run_node(prompt, nid, values)
                    except Exception as error:  # noqa: BLE001 - reported as ComfyUI reports it
                        data = {"prompt_id": prompt_id, "node_id": nid, "node_type": prompt[nid]["class_type"],
                                "executed": list(values), "exception_message": f"{error}\n",
                                "exception_type": type(error).__module__ + "." + type(error).__name__,
                                "traceback": [], "current_inputs": {}, "current_outputs": [], "timestamp": now()}
                        messages.append(["execution_error", data])
                        self.send(client, "execution_error", data)
                        self.finish(prompt_id, item, {}, "error", messages, client)
                        return
                    if ui is not None:
                        results[nid] = ui
                        self.send(client, "executed", {"node": nid, "display_node": nid, "output": ui,
                                                       "prompt_id": prompt_id})
                self.cache[key] = results
        except Interrupted as stopped:
            data = {"prompt_id": prompt_id, "node_id": str(stopped), "node_type": prompt[str(stopped)]["class_type"],
                    "executed": [], "timestamp": now()}
            messages.append(["execution_interrupted", data])
            self.send(client, "execution_interrupted", data)
            self.finish(prompt_id, item, {}, "error", messages, client)
            return
        messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": now()}])
        self.send(client, "execution_success", messages[-1][1])
        self.finish(prompt_id, item, results, "success", messages, client)

    def finish(self, prompt_id: str, item: list, outputs: dict, status: str, messages: list, client: str | None) -> None:
        self.history[prompt_id] = {"prompt": item, "outputs": outputs,
                                   "status": {"status_str": status, "completed": status == "success", "messages": messages},
                                   "meta": {k: {"node_id": k, "display_node": k, "parent_node": None, "real_node_id": k}
                                            for k in outputs}}
        with open(self.root / "executed.log", "a", encoding="utf-8") as log:
            log.write(f"{prompt_id} {status}\n")
        self.send(client, "executing", {"node": None, "prompt_id": prompt_id})

    @staticmethod
    def order(prompt: dict, outputs: list[str]) -> list[str]:
        ordered: list[str] = []

        def visit(nid: str) -> None:
            if nid in ordered:
                return
            for value in prompt[nid].get("inputs", {}).values():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                    visit(value[0])
            ordered.append(nid)

        for out in outputs:
            visit(out)
        return ordered

    def run_node(self, prompt: dict, nid: str, values: dict) -> tuple[tuple, dict | None]:
        node = prompt[nid]
        kind = node["class_type"]
        if kind not in RUNNABLE:
            raise RuntimeError(f"the ComfyUI double cannot run {kind}: it has no models")
        args = {name: values[value[0]][value[1]] if isinstance(value, list) else value
                for name, value in node.get("inputs", {}).items()}
        if kind == "LoadImage":
            with Image.open(self.input / str(args["image"]).split(" [")[0]) as image:
                array = np.asarray(image.convert("RGB"), dtype=np.float32)[None] / 255.0
            return (array, np.zeros(array.shape[:3], np.float32)), None
        if kind == "EmptyImage":
            color = int(args.get("color", 0))
            rgb = np.array([(color >> 16) & 255, (color >> 8) & 255, color & 255], np.float32) / 255.0
            return (np.broadcast_to(rgb, (int(args["batch_size"]), int(args["height"]), int(args["width"]), 3)).copy(),), None
        if kind == "RepeatImageBatch":
            return (np.concatenate([args["image"]] * int(args["amount"])),), None
        if kind == "ImageScale":
            frames = [np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((int(args["width"]), int(args["height"]))),
                                 np.float32) / 255.0 for f in args["image"]]
            return (np.stack(frames),), None
        if kind == "CreateVideo":
            return ((args["images"], float(args["fps"])),), None
        if kind == "SaveVideo":
            images, fps = args["video"]
            path, entry = self.next_file(str(args["filename_prefix"]), "mp4")
            with av.open(str(path), "w") as container:
                stream = container.add_stream("libx264", rate=round(fps))
                stream.width, stream.height, stream.pix_fmt = images.shape[2], images.shape[1], "yuv420p"
                for frame in images:
                    picture = av.VideoFrame.from_ndarray((frame * 255).astype(np.uint8), format="rgb24")
                    container.mux(stream.encode(picture))
                container.mux(stream.encode())
            return (), {"images": [entry], "animated": [True]}
        # SaveImage
        entries = []
        for frame in args["images"]:
            path, entry = self.next_file(str(args["filename_prefix"]), "png")
            Image.fromarray((frame * 255).astype(np.uint8)).save(path)
            entries.append(entry)
        return (), {"images": entries}

    def next_file(self, prefix: str, extension: str) -> tuple[Path, dict]:
        """`<prefix basename>_<counter:05>_.<ext>` in the prefix's folder; the counter resumes from the files."""
        subfolder, _, base = prefix.rpartition("/")
        folder = self.output / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        taken = [int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(re.escape(base) + r"_(\d{5})_\..+", p.name))]
        name = f"{base}_{max(taken, default=0) + 1:05d}_.{extension}"
        return folder / name, {"filename": name, "subfolder": subfolder, "type": "output"}

    # ------------------------------------------------------------------ routes

    async def system_stats(self, request: Request) -> JSONResponse:
        return JSONResponse({"system": {"os": "posix", "ram_total": 25275990016, "ram_free": 22159835136,
                                        "comfyui_version": "0.3.64", "python_version": "3.11.7", "pytorch_version": "2.13.0+cpu",
                                        "embedded_python": False, "argv": ["main.py", "--cpu"]},
                             "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 25275990016,
                                          "vram_free": 22159835136, "torch_vram_total": 25275990016,
                                          "torch_vram_free": 22159835136}]})

    def object_info_now(self) -> dict:
        info = json.loads(json.dumps(self.info))
        files = sorted(p.name for p in self.input.iterdir() if p.is_file())
        info["LoadImage"]["input"]["required"]["image"] = [files, {"image_upload": True}]
        return info

    async def object_info(self, request: Request) -> JSONResponse:
        name = request.path_params.get("name")
        info = self.object_info_now()
        return JSONResponse({name: info[name]} if name in info else {} if name else info)

    async def prompt(self, request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"exec_info": {"queue_remaining": len(self.pending) + (1 if self.running else 0)}})
        try:
            body = json.loads(await request.body())
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            return PlainTextResponse("500 Internal Server Error\n\nServer got itself in trouble", status_code=500)
        if "prompt" not in body:
            return JSONResponse({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "",
                                           "extra_info": {}}, "node_errors": {}}, status_code=400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            return PlainTextResponse("500 Internal Server Error\n\nServer got itself in trouble", status_code=500)
        with self.lock:
            number = self.counter
            self.counter += 1
        for nid, node in prompt.items():
            if "class_type" not in node:
                return JSONResponse({"error": {"type": "invalid_prompt", "message": "Cannot execute because a node is "
                                               "missing the class_type property.", "details": f"Node ID '#{nid}'",
                                               "extra_info": {}}, "node_errors": {}}, status_code=400)
            if node["class_type"] not in self.info:
                return JSONResponse({"error": {"type": "invalid_prompt", "message": f"Cannot execute because node "
                                               f"{node['class_type']} does not exist.", "details": f"Node ID '#{nid}'",
                                               "extra_info": {}}, "node_errors": {}}, status_code=400)
        good, node_errors = self.validate(prompt)
        if not good and not node_errors:
            return JSONResponse({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                                           "extra_info": {}}, "node_errors": {}}, status_code=400)
        if not good:
            return JSONResponse({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed "
                                           "validation", "details": "", "extra_info": {}}, "node_errors": node_errors},
                                status_code=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra = {"client_id": body["client_id"]} if body.get("client_id") else {}
        with self.lock:
            heapq.heappush(self.pending, [number, prompt_id, prompt, extra, good])
            self.lock.notify()
        self.status()
        return JSONResponse({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def queue(self, request: Request) -> Response:
        if request.method == "POST":
            body = json.loads(await request.body() or b"{}")
            with self.lock:
                if body.get("clear"):
                    self.pending.clear()
                doomed = set(body.get("delete", []))
                self.pending = [item for item in self.pending if item[1] not in doomed]
                heapq.heapify(self.pending)
            return _empty(200)
        with self.lock:
            return JSONResponse({"queue_running": [self.running] if self.running else [],
                                 "queue_pending": list(self.pending)})

    async def interrupt(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        target = body.get("prompt_id")
        with self.lock:
            if self.running and (target is None or self.running[1] == target):
                self.interrupt_id = self.running[1]
        return _empty(200)

    async def history_route(self, request: Request) -> Response:
        if request.method == "POST":
            body = json.loads(await request.body() or b"{}")
            if body.get("clear"):
                self.history.clear()
            for prompt_id in body.get("delete", []):
                self.history.pop(prompt_id, None)
            return _empty(200)
        prompt_id = request.path_params.get("prompt_id")
        if prompt_id is not None:
            return JSONResponse({prompt_id: self.history[prompt_id]} if prompt_id in self.history else {})
        return JSONResponse(self.history)

    async def view(self, request: Request) -> Response:
        params = request.query_params
        kind = params.get("type", "output")
        if kind not in ("output", "input", "temp") or "filename" not in params:
            return _empty(400 if "filename" in params else 404)
        base = {"output": self.output, "input": self.input, "temp": self.root / "temp"}[kind]
        folder = (base / params.get("subfolder", "")).resolve()
        if not folder.is_relative_to(base.resolve()):
            return _empty(403)
        path = folder / Path(params["filename"]).name
        if not path.is_file():
            return _empty(404)
        media = {".png": "image/png", ".webp": "image/webp", ".mp4": "video/mp4", ".webm": "video/webm"}
        return FileResponse(path, media_type=media.get(path.suffix, "application/octet-stream"),
                            headers={"Content-Disposition": f'filename="{path.name}"'})

    async def upload(self, request: Request) -> Response:
        form = await request.form()
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return _empty(400) if upload is None else PlainTextResponse("500 Internal Server Error", status_code=500)
        name, subfolder = Path(upload.filename or "").name, str(form.get("subfolder", ""))
        if not name or ".." in Path(subfolder).parts or upload.filename != name:
            return _empty(400)
        data = await upload.read()
        folder = self.input / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        target, stem, n = folder / name, Path(name).stem, 1
        while target.exists() and target.read_bytes() != data and form.get("overwrite") not in ("true", "1"):
            target = folder / f"{stem} ({n}){Path(name).suffix}"
            n += 1
        target.write_bytes(data)
        return JSONResponse({"name": target.name, "subfolder": subfolder, "type": "input"})

    async def socket(self, socket: WebSocket) -> None:
        await socket.accept()
        client_id = socket.query_params.get("clientId") or uuid.uuid4().hex
        self.sockets[client_id] = socket  # a second socket with this id takes over
        remaining = len(self.pending) + (1 if self.running else 0)
        await socket.send_text(json.dumps({"type": "status", "data": {"status": {"exec_info": {
            "queue_remaining": remaining}}, "sid": client_id}}))
        try:
            while True:
                await socket.receive_text()
        except WebSocketDisconnect:
            if self.sockets.get(client_id) is socket:
                del self.sockets[client_id]

    def app(self) -> Starlette:
        routes = []
        for prefix in ("", "/api"):
            routes += [Route(f"{prefix}/system_stats", self.system_stats),
                       Route(f"{prefix}/object_info", self.object_info),
                       Route(f"{prefix}/object_info/{{name}}", self.object_info),
                       Route(f"{prefix}/prompt", self.prompt, methods=["GET", "POST"]),
                       Route(f"{prefix}/queue", self.queue, methods=["GET", "POST"]),
                       Route(f"{prefix}/interrupt", self.interrupt, methods=["POST"]),
                       Route(f"{prefix}/history", self.history_route, methods=["GET", "POST"]),
                       Route(f"{prefix}/history/{{prompt_id}}", self.history_route),
                       Route(f"{prefix}/view", self.view),
                       Route(f"{prefix}/upload/image", self.upload, methods=["POST"]),
                       WebSocketRoute(f"{prefix}/ws", self.socket)]

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette):  # noqa: ANN202
            self.loop = asyncio.get_running_loop()
            yield

        return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--node-delay", type=float, default=0.0)
    args = parser.parse_args()
    double = Double(args.root, args.node_delay)
    threading.Thread(target=double.worker, daemon=True).start()
    uvicorn.run(double.app(), host="127.0.0.1", port=args.port, log_level="warning", ws="websockets")


if __name__ == "__main__":
    main()
