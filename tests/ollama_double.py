"""A local HTTP server that speaks the parts of Ollama's REST API our client uses.

It is a test double of the *protocol* only: the code under test is the real
`ollama` client over real HTTP. Its "model" is a few lines of Python that turn
the scene text it is sent into shots, so answers depend on the request.
Behaviours (garbage, errors, slowness, dropped connections) are switched per test.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIGEST = "sha256:" + "ab" * 32


def plan_from_scene_text(user_message: str) -> dict[str, Any]:
    """The double's 'model': one shot per line of the scene text it was sent."""
    match = re.search(r"<<<SCENE TEXT\n(.*)\nSCENE TEXT>>>", user_message, re.DOTALL)
    lines = [line.strip() for line in (match.group(1) if match else user_message).splitlines() if line.strip()]
    shots = []
    for index, line in enumerate(lines[:12]):
        speaker = line.split(":", 1)[0] if re.match(r"^[A-Z][A-Z .'#0-9()-]+:", line) else ""
        shots.append(
            {
                "framing": "wide" if index == 0 else "medium close-up" if speaker else "medium",
                "camera_move": "push in" if index == 0 else "static",
                "characters": [],
                "action": line,
                "first_frame": f"Start of: {line}",
                "last_frame": f"End of: {line}",
                "motion": "slow and steady",
                "dialogue": line if speaker else "",
                "sound": "room tone",
                "duration_s": 3.0,
                "transition": "cut",
            }
        )
    return {"shots": shots}


def bible_from_prompt(user_message: str) -> dict[str, Any]:
    match = re.search(r"<<<INTRODUCTIONS\n(.*)\nINTRODUCTIONS>>>", user_message, re.DOTALL)
    names = [line.split(":", 1)[0].strip() for line in (match.group(1) if match else "").splitlines() if ":" in line]
    return {"characters": [{"name": n, "description": f"{n.title()}, same face and clothes in every shot"} for n in names]}


def default_answer(request: dict[str, Any]) -> str:
    # Repairs append turns; the task itself is always the first user message.
    first_user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    if "<<<INTRODUCTIONS" in first_user:
        return json.dumps(bible_from_prompt(first_user))
    return json.dumps(plan_from_scene_text(first_user))


@dataclass
class OllamaDouble:
    """Start with `start()`; set `behaviour` to change how /api/chat answers."""

    models: list[str] = field(default_factory=lambda: ["qwen3:4b"])
    behaviour: Callable[[dict[str, Any], int], Any] | None = None  # (request, call number) -> answer spec
    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    delay_s: float = 0.0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OllamaDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_GET(self) -> None:
                double.paths.append(self.path)
                if self.path == "/api/version":
                    self._send(200, {"version": "0.12.6"})
                elif self.path == "/api/tags":
                    self._send(200, {"models": [double._model_entry(m) for m in double.models]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                double.paths.append(self.path)
                body = self._body()
                if self.path == "/api/show":
                    name = body.get("model", "")
                    if name not in double.models:
                        self._send(404, {"error": f"model '{name}' not found"})
                    else:
                        self._send(200, {"modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
                                         "details": double._model_entry(name)["details"],
                                         "model_info": {}, "capabilities": ["completion"]})
                    return
                if self.path != "/api/chat":
                    self._send(404, {"error": "not found"})
                    return
                double.chat_requests.append(body)
                if body.get("model") not in double.models:
                    self._send(404, {"error": f"model '{body.get('model')}' not found, try pulling it first"})
                    return
                if double.delay_s:
                    time.sleep(double.delay_s)
                spec = (double.behaviour or (lambda r, n: default_answer(r)))(body, len(double.chat_requests))
                if isinstance(spec, tuple):  # (status, error text)
                    self._send(spec[0], {"error": spec[1]})
                elif spec == "DROP":
                    # Promise a body, send half of it, hang up: a connection closed mid-answer.
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"model": "qwen3:4b", "message": {"role": "assis')
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self._send(200, {
                        "model": body["model"], "created_at": "2026-11-21T00:00:00Z",
                        "message": {"role": "assistant", "content": spec},
                        "done": True, "done_reason": "stop", "total_duration": 1000, "eval_count": 10,
                    })

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _model_entry(self, name: str) -> dict[str, Any]:
        return {"name": name, "model": name, "modified_at": "2026-11-01T00:00:00Z", "size": 2_500_000_000,
                "digest": DIGEST, "details": {"format": "gguf", "family": "qwen3", "parameter_size": "4B",
                                              "quantization_level": "Q4_K_M"}}
