"""The web page for readers: a JSON API over :class:`vidnotes.web.service.Library` and one static page.

    vidnotes ui [--host 127.0.0.1] [--port 7860]     (make ui)

Routes: ``GET /`` the page; ``POST /api/uploads?name=&speakers=&language=`` (the file as the raw
body); ``GET /api/jobs``; ``GET /api/jobs/<id>``; ``GET /api/jobs/<id>/media`` (byte ranges);
``GET /api/jobs/<id>/files/<pdf|md|srt|vtt|json|notes-json>``; ``POST /api/jobs/<id>/corrections``
``{"segment": 3, "text": "..."}``; ``POST /api/jobs/<id>/flags`` ``{"sentence": "...", "comment": "..."}``.

Safety: every answer carries a Content-Security-Policy that lets the page load and contact only
this server (no other origin, no inline script); requests must name this server as their Host
(no DNS rebinding); a POST must carry ``X-Requested-With: vidnotes`` (a cross-site form cannot);
an upload is spooled to a temporary file, counted against the size limit while it arrives, checked,
and only then put into the inbox, so a refused or broken upload leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from vidnotes.web.service import MEDIA_TYPES, Library, WebError

STATIC = Path(__file__).with_name("static")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip
log = logging.getLogger(__name__)


def _error(_request: Request, e: Exception) -> JSONResponse:
    """Every refusal the routes raise (WebError), as ``{"error": message}`` with its status."""
    assert isinstance(e, WebError)
    return JSONResponse({"error": str(e)}, status_code=e.status)


def create_app(library: Library, *, allowed_hosts: list[str] | None = None, spool_dir: Path | None = None) -> FastAPI:
    app = FastAPI(title="vidnotes", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or ["127.0.0.1", "localhost", "[::1]"])
    app.add_exception_handler(WebError, _error)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.method == "POST" and request.headers.get("x-requested-with") != "vidnotes":
            response: Response = JSONResponse({"error": "a POST must come from the vidnotes page (X-Requested-With: vidnotes)"}, status_code=403)
        else:
            response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        files = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
        if name not in files:
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(STATIC / name, media_type=files[name], headers={"Cache-Control": "no-cache"})

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        return {"max_upload_bytes": library.max_upload_bytes, "extensions": sorted(MEDIA_TYPES)}

    @app.post("/api/uploads")
    async def upload(request: Request, name: str = "", speakers: str = "", language: str = "") -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > library.max_upload_bytes:
            raise WebError(413, f"{name[:120]}: {int(declared) / 2**20:.0f} MiB is more than the limit of {library.max_upload_bytes / 2**20:.0f} MiB")
        with tempfile.TemporaryDirectory(dir=spool_dir, prefix="vidnotes-upload-") as tmp:
            path = Path(tmp) / "upload"
            size = 0
            with path.open("wb") as f:
                async for block in request.stream():
                    size += len(block)
                    if size > library.max_upload_bytes:
                        raise WebError(413, f"{name[:120]}: more than the limit of {library.max_upload_bytes / 2**20:.0f} MiB")
                    f.write(block)
            if size == 0:
                raise WebError(400, f"{name[:120] or 'the upload'}: the file is empty (0 bytes)")
            out = await run_in_threadpool(library.upload, path, name, speakers=speakers, language=language)
        return JSONResponse(out, status_code=201)

    @app.get("/api/jobs")
    def jobs() -> dict[str, Any]:
        return library.jobs()

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> Response:
        return JSONResponse(library.job(job_id))

    @app.get("/api/jobs/{job_id}/files/{name}")
    def download(job_id: str, name: str) -> Response:
        data, ctype, filename = library.download(job_id, name)
        quoted = filename.encode("ascii", "replace").decode().replace('"', "'")
        return Response(data, media_type=ctype, headers={"Content-Disposition": f"attachment; filename=\"{quoted}\"; filename*=UTF-8''{quote(filename)}"})

    @app.get("/api/jobs/{job_id}/media")
    def media(job_id: str, request: Request) -> Response:
        status, headers, body = library.media(job_id, request.headers.get("range"))
        return StreamingResponse(body, status_code=status, headers=headers)

    async def _body(request: Request) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise WebError(415, "send JSON (Content-Type: application/json)")
        raw = await request.body()
        if len(raw) > 16_384:
            raise WebError(413, "the request is larger than 16 KiB")
        try:
            body = json.loads(raw)
        except ValueError:
            raise WebError(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise WebError(400, "the body must be a JSON object")
        return body

    @app.post("/api/jobs/{job_id}/corrections")
    async def correct(job_id: str, request: Request) -> Response:
        body = await _body(request)
        return JSONResponse(await run_in_threadpool(library.correct, job_id, body.get("segment"), body.get("text")), status_code=201)

    @app.post("/api/jobs/{job_id}/flags")
    async def flag(job_id: str, request: Request) -> Response:
        body = await _body(request)
        return JSONResponse(await run_in_threadpool(library.flag, job_id, body.get("sentence"), body.get("comment")), status_code=201)

    return app
