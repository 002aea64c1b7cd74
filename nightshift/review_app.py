"""`nightshift review`: the morning review as a local web app (Starlette, served by uvicorn; both come with Prefect).

Pages: the nights and their films (/), one delivery's cut and shots with their marks (/d/DATE/NAME),
the versions of one film side by side (/compare/DATE/NAME). Files are served from deliveries only
(/media/DATE/NAME/PATH, with HTTP range requests so a player seeks), and each shot's storyboard
frame (/frame/DATE/NAME/SHOT.jpg). Marks are POSTs to /mark (nightshift/review.py does the work).

Safe by default: it binds 127.0.0.1; any other address needs a token (given once in the URL, then
kept in a cookie). Every request's Host must be this server (no DNS rebinding), every POST carries
this process's CSRF token, and an upload is size-limited and must decode as an image.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from nightshift.config import Settings
from nightshift.dailies import Dailies, DeliveryView
from nightshift.edits import REVIEW_FIELDS
from nightshift.errors import NightshiftError
from nightshift.files import OutsideStudio, inside
from nightshift.review import MAX_UPLOAD_BYTES, ReviewBook, delivery_key
from nightshift.schemas import CameraMove, Framing
from nightshift.seal import delivered_files
from nightshift.templating import html_templates

TOKEN_COOKIE = "nightshift_review"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # with no-referrer, a browser sends its forms with `Origin: null`
    "X-Frame-Options": "DENY",
}
FORM_LIMIT = MAX_UPLOAD_BYTES + 256 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ReviewServer:
    """What one `nightshift review` process serves, and to whom."""

    settings: Settings
    host: str
    port: int
    token: str | None  # required for a non-loopback host
    csrf: str

    @classmethod
    def make(cls, settings: Settings, host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> ReviewServer:
        if not is_loopback(host) and not token:
            raise NightshiftError(f"--host {host} would serve the studio's dailies beyond this machine without a token",
                                  "add --token SECRET (or set NIGHTSHIFT_REVIEW_TOKEN), or keep the default 127.0.0.1")
        return cls(settings, host, port, token, secrets.token_urlsafe(32))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"/?{urlencode({'token': self.token})}" if self.token else "/"
        return f"http://{host}:{self.port}{query}"

    def allowed_hosts(self) -> set[str]:
        names = {"127.0.0.1", "localhost", "[::1]", f"[{self.host}]" if ":" in self.host else self.host}
        return {f"{name}:{self.port}" for name in names}


def build_app(server: ReviewServer) -> Starlette:
    book = ReviewBook(server.settings)
    pages = html_templates(server.settings.templates_override_dir)
    frames_cache = server.settings.resolve(Path(".nightshift")) / "cache" / "review-frames"
    night = server.settings.night

    def page(name: str, request: Request, status: int = 200, **variables: object) -> HTMLResponse:
        html = pages.get_template(name).render(
            studio=str(server.settings.project_dir), csrf=server.csrf, said=request.query_params.get("said"),
            error=variables.pop("error", None) or request.query_params.get("error"), **variables)
        return HTMLResponse(html, status_code=status)

    def index(request: Request) -> Response:
        dailies = Dailies(book)  # read fresh for each page, each manifest once
        nights: dict[str, list[dict[str, object]]] = {}
        for root, keys in dailies.films():
            views = [dailies.delivery(key) for key in keys]
            first = views[0]
            # A film is listed under the night of its newest version, with every version.
            nights.setdefault(max(v.night for v in views), []).append({
                "title": first.title, "root": root, "shots": len(first.shots),
                "seconds": sum(s.duration_s for s in first.shots), "animatic": first.animatic,
                "versions": [{"key": v.key, "version": v.version, "approved": v.count("approved"),
                              "redo": v.count("redo")} for v in views]})
        return page("review_index.html.j2", request, nights=sorted(nights.items(), reverse=True))

    def delivery(request: Request) -> Response:
        dailies = Dailies(book)  # read fresh for each page, each manifest once
        key = f"{request.path_params['night']}/{request.path_params['name']}"
        view = dailies.delivery(key)
        return page("review_delivery.html.j2", request, d=view, jobs=_jobs(view, book),
                    versions=sum(len(keys) for root, keys in dailies.films() if root == view.root),
                    framings=[f.value for f in Framing], moves=[m.value for m in CameraMove],
                    window=f"{night.window_start}-{night.window_end}")

    def compare(request: Request) -> Response:
        dailies = Dailies(book)  # read fresh for each page, each manifest once
        root = f"{request.path_params['night']}/{request.path_params['name']}"
        keys = next((k for r, k in dailies.films() if r == root), None)
        if keys is None:
            raise NightshiftError(f"no film starts at {root!r}", "pick one from the list of nights")
        views = [dailies.delivery(key) for key in keys]
        order = [shot.id for shot in views[-1].shots]
        rows = []
        for shot_id in order:
            cells = []
            for view in views:
                shot = next((s for s in view.shots if s.id == shot_id), None)
                cells.append(None if shot is None else {
                    "key": view.key, "video": shot.video, "take": shot.take, "seed": shot.seed, "framing": shot.framing,
                    "state": shot.review.state, "new_in_version": shot.new_in_version, "notes": shot.notes})
            rows.append({"id": shot_id, "cells": cells})
        return page("review_compare.html.j2", request, title=views[0].title, rows=rows,
                    versions=[{"key": v.key, "version": v.version} for v in views])

    def media(request: Request) -> Response:
        dailies = Dailies(book)  # read fresh for each page, each manifest once
        key = f"{request.path_params['night']}/{request.path_params['name']}"
        folder = dailies.folder(key)
        relative = request.path_params["path"]
        try:
            path = inside(folder / relative, folder, what="file")
        except OutsideStudio:
            return PlainTextResponse("not found", status_code=404)
        if path.relative_to(folder).as_posix() not in {*delivered_files(folder), "manifest.json"}:
            return PlainTextResponse("not found", status_code=404)  # hidden, working or unlisted files are not served
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    def frame(request: Request) -> Response:
        dailies = Dailies(book)  # read fresh for each page, each manifest once
        key = f"{request.path_params['night']}/{request.path_params['name']}"
        return FileResponse(dailies.frame(key, request.path_params["shot"], frames_cache), media_type="image/jpeg")

    async def mark(request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > FORM_LIMIT:
            return PlainTextResponse(f"the upload is over {MAX_UPLOAD_BYTES // 2**20} MB", status_code=413)
        async with request.form(max_files=1, max_fields=40, max_part_size=FORM_LIMIT) as form:
            if not secrets.compare_digest(str(form.get("csrf", "")), server.csrf):
                return PlainTextResponse("this form is from another page or an earlier server; reload the page",
                                         status_code=403)
            key, shot, action = str(form.get("delivery", "")), str(form.get("shot", "")), str(form.get("action", ""))
            upload = form.get("keyframe")
            data = await upload.read(MAX_UPLOAD_BYTES + 1) if upload is not None and hasattr(upload, "read") else b""
            note = _text(form.get("note"))
            changes = {name: _text(form.get(f"set_{name}")) for name in REVIEW_FIELDS if form.get(f"set_{name}") is not None}
        back = f"/d/{quote(key)}"
        try:
            Dailies(book).folder(key)  # the page's DATE/NAME, nothing else (the command also takes a path)
            if action not in ("approve", "redo", "withdraw"):
                raise NightshiftError(f"unknown mark {action!r}", "approve, redo or withdraw")
            if changes.get("prompt") == "":
                changes.pop("prompt")  # an empty box keeps the written prompt
            marks, job = book.mark(key, [shot], action, note=note, changes=changes if action == "redo" else None,
                                   keyframe=data or None)
        except NightshiftError as error:
            return RedirectResponse(f"{back}?{urlencode({'error': error.report()})}#{quote(shot)}", status_code=303)
        said = {"approve": f"{shot} approved.", "withdraw": f"{shot}: mark withdrawn.",
                "redo": f"{shot} will be rendered again in job {job.id if job else '?'}"
                        f" (next window {night.window_start}-{night.window_end}, or now under serve --now)."}[action]
        return RedirectResponse(f"{back}?{urlencode({'said': said})}#{quote(shot)}", status_code=303)

    async def guard(request: Request, call_next):  # noqa: ANN001, ANN202
        if request.headers.get("host", "") not in server.allowed_hosts():
            return PlainTextResponse("unknown host", status_code=421)
        if server.token:
            given = request.query_params.get("token")
            if given is not None and secrets.compare_digest(given, server.token):
                response = RedirectResponse(request.url.path, status_code=303)
                response.set_cookie(TOKEN_COOKIE, server.token, httponly=True, samesite="strict")
                return response
            if not secrets.compare_digest(request.cookies.get(TOKEN_COOKIE, ""), server.token):
                return PlainTextResponse("this review server needs its token: open the address `nightshift review` "
                                         "printed", status_code=401)
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin is not None and origin.removeprefix("http://") not in server.allowed_hosts():
                return PlainTextResponse("a form from another site", status_code=403)
        try:
            response = await call_next(request)
        except NightshiftError as error:
            response = page("review_index.html.j2", request, status=404, nights=[], error=error.report())
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return Starlette(routes=[
        Route("/", index),
        Route("/d/{night}/{name}", delivery),
        Route("/compare/{night}/{name}", compare),
        Route("/media/{night}/{name}/{path:path}", media),
        Route("/frame/{night}/{name}/{shot}.jpg", frame),
        Route("/mark", mark, methods=["POST"]),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
    ], middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])


def _text(value: object) -> str:
    """A form's text as typed (browsers send CRLF line breaks)."""
    return str(value or "").replace("\r\n", "\n").strip()


def _jobs(view: DeliveryView, book: ReviewBook) -> list[dict[str, object]]:
    return [{"state": job.state, "shots": job.redo.shots if job.redo else [], "id": job.id, "error": job.error,
             "delivery": job.delivery, "delivery_key": delivery_key(book.output, job.delivery) if job.delivery else None}
            for job in view.jobs]


def serve_review(server: ReviewServer) -> None:
    """Run the review server until Ctrl-C."""
    uvicorn.run(build_app(server), host=server.host, port=server.port, log_level="warning", server_header=False)
