"""Serve a directory hub over HTTP with the Hub's URL shape, for browsers and the Hub client.

``GET|HEAD /{org}/{name}/resolve/{rev}/{path}`` where ``rev`` is a tag (``v1.0.0``), ``main``
or a commit sha; ``GET /api/models/{org}/{name}[/revision/{rev}]``, the Hub API's answer of which
commit a revision is (``{"id", "sha", "siblings"}``), which the web runtime asks to load
``ORG/NAME@VERSION`` by commit; with ``app``, ``/app/...`` serves that folder's static files (the
web runtime's demo page), so a page and the models it loads come from one origin; everything else
is 404. Answers carry what the web runtime needs (CORS, Range, ETag = sha256) and what
``hf_hub_download`` needs (``X-Repo-Commit``, ``X-Error-Code``), so the same URLs work against
``packer serve`` and the real Hub. Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import mimetypes
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packer.errors import HubError, SdpackError
from packer.hub.local import LocalHub
from packer.support.names import COMMIT, check_repo_id

ROUTE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
API_REVISION = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "X-Repo-Commit, ETag, Content-Length, Content-Range, Accept-Ranges, X-Error-Code",
}
PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, If-None-Match, If-Range, Content-Type",
    "Access-Control-Max-Age": "86400",
}


class _NotFound(Exception):
    def __init__(self, code: str, headers: dict | None = None):
        super().__init__(code)
        self.code, self.headers = code, headers or {}


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) of a single ``bytes=`` range; None for the whole file; ValueError if unsatisfiable."""
    m = RANGE.match((header or "").strip())
    if not m or not (m.group(1) or m.group(2)):
        return None
    if not m.group(1):
        start, end = max(0, size - int(m.group(2))), size - 1
    else:
        start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
    if start >= size or start > end:
        raise ValueError(header)
    return start, end


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: LocalHub  # set on the subclass made by make_server
    app: Path | None = None  # static files served under /app/

    def log_message(self, format, *args):  # noqa: A002 - quiet: the CLI prints the URL once
        pass

    def _answer(self, status: int, headers: dict, length: int = 0) -> None:
        self.send_response(status)
        for key, value in {**CORS, "Content-Length": str(length), **headers}.items():
            self.send_header(key, value)
        self.end_headers()

    def do_OPTIONS(self) -> None:
        self._answer(204, PREFLIGHT)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        self._answer(405, {"Allow": "GET, HEAD, OPTIONS"})

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _locate(self) -> tuple[str, str, dict]:
        m = ROUTE.match(urlsplit(self.path).path)
        if not m:
            raise _NotFound("EntryNotFound")
        repo, rev, path = m.group(1), unquote(m.group(2)), unquote(m.group(3))
        try:
            check_repo_id(repo)
            commit = self.hub.commit_for(repo, rev)
        except SdpackError:
            raise _NotFound("RepoNotFound") from None
        if commit is None:
            raise _NotFound("RevisionNotFound")
        entry = self.hub.snapshot(repo, commit).get(path)
        if entry is None:
            raise _NotFound("EntryNotFound", {"X-Repo-Commit": commit})
        return repo, commit, {**entry, "immutable": COMMIT.match(rev) is not None, "path": path}

    def _static(self) -> None:
        """A file of the app folder; never anything outside it."""
        rel = unquote(urlsplit(self.path).path)[len("/app/") :] or "index.html"
        root = self.app.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            self._answer(404, {})
            return
        data = path.read_bytes()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix in (".js", ".mjs"):
            kind = "text/javascript"
        self._answer(200, {"Content-Type": kind, "Cache-Control": "no-cache"}, len(data))
        if self.command == "GET":
            self.wfile.write(data)

    def _revision(self, repo: str, rev: str) -> None:
        """The Hub API's revision info: the commit ``rev`` points to, and the files there."""
        try:
            check_repo_id(repo)
            commit = self.hub.commit_for(repo, rev)
        except SdpackError:
            commit, code = None, "RepoNotFound"
        else:
            code = "RevisionNotFound"
        if commit is None:
            body = json.dumps({"error": f"{code}: {repo}@{rev}"}).encode()
            self._answer(404, {"X-Error-Code": code, "Content-Type": "application/json"}, len(body))
        else:
            siblings = [{"rfilename": path} for path in sorted(self.hub.snapshot(repo, commit))]
            body = json.dumps({"id": repo, "sha": commit, "siblings": siblings}).encode()
            self._answer(
                200, {"Content-Type": "application/json", "Cache-Control": "no-cache"}, len(body)
            )
        if self.command == "GET":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if self.app is not None and path.startswith("/app/"):
            self._static()
            return
        api = API_REVISION.match(path)
        if api:
            self._revision(api.group(1), unquote(api.group(2) or "main"))
            return
        try:
            repo, commit, entry = self._locate()
        except (_NotFound, HubError) as exc:
            code = exc.code if isinstance(exc, _NotFound) else "EntryNotFound"
            self._answer(404, {"X-Error-Code": code, **getattr(exc, "headers", {})})
            return
        size = entry["size"]
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{entry["sha256"]}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/json"
            if entry["path"].endswith(".json")
            else "application/octet-stream",
            "Cache-Control": "public, max-age=31536000, immutable"
            if entry["immutable"]
            else "no-cache",
        }
        try:
            span = _span(self.headers.get("Range"), size)
        except ValueError:
            self._answer(416, {"Content-Range": f"bytes */{size}"})
            return
        start, end = span or (0, size - 1)
        if span:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._answer(206 if span else 200, headers, end - start + 1 if size else 0)
        if self.command == "GET" and size:
            with open(self.hub.object_path(repo, entry["sha256"]), "rb") as f:
                f.seek(start)
                _copy(f, self.wfile, end - start + 1)


def _copy(src, dst, n: int) -> None:
    while n > 0:
        block = src.read(min(n, 1 << 20))
        if not block:
            break
        dst.write(block)
        n -= len(block)


def make_server(
    directory: str | Path, port: int = 8000, host: str = "127.0.0.1", app: str | Path | None = None
) -> ThreadingHTTPServer:
    """A ready (not yet running) server; ``port=0`` picks a free port (see ``server_address``)."""
    root = Path(directory)
    if not root.is_dir():
        raise HubError(f"{root}: no such hub directory", "publish with --to DIR first")
    if app is not None and not Path(app).is_dir():
        raise HubError(
            f"{app}: no such app directory", "pass the folder holding the page, e.g. runtime-web"
        )
    handler = type(
        "HubHandler", (_Handler,), {"hub": LocalHub(root), "app": Path(app) if app else None}
    )
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise HubError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", "choose another --port"
        ) from None
    server.daemon_threads = True
    return server


def serve(directory: str | Path, port: int = 8000, host: str = "127.0.0.1") -> None:
    """Serve until interrupted (Ctrl-C ends it cleanly)."""
    server = make_server(directory, port, host)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = ["make_server", "serve"]
