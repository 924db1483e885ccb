"""HTTP plumbing shared by every route: request bodies, answers, errors, CORS and Range.

Errors are raised (:class:`Abort`, :class:`Drop`) and turned into answers in one place, so a
route reads top to bottom as the protocol step it implements.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field

EXPOSED = "X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size, Content-Range, Accept-Ranges, Content-Length, X-Error-Code, X-Error-Message"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": EXPOSED,
}
PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Authorization, Content-Type, If-None-Match, If-Range",
    "Access-Control-Max-Age": "86400",
}


class Abort(Exception):
    """Answer with an error: JSON ``{"error"}`` plus the headers the client classifies by."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class Drop(Exception):
    """Close the connection without any answer (a network failure, as the client sees it)."""


@dataclass
class Request:
    """One request as a route sees it; ``handler`` is the BaseHTTPRequestHandler."""

    handler: object
    method: str
    path: str
    query: dict
    params: dict = field(default_factory=dict)
    _body: bytes | None = None

    @property
    def headers(self):
        return self.handler.headers

    def body(self, limit: int | None = None) -> bytes:
        """The whole body (Content-Length or chunked); ``limit`` reads only that many bytes."""
        if self._body is not None:
            return self._body
        rfile = self.handler.rfile
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    rfile.readline()
                    break
                data += rfile.read(size)
                rfile.readline()
                if limit is not None and len(data) >= limit:
                    return bytes(data[:limit])
            self._body = bytes(data)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            self._body = rfile.read(length if limit is None else min(limit, length))
        return self._body

    def json(self):
        try:
            return json.loads(self.body() or b"null")
        except ValueError:
            raise Abort(400, "body is not valid JSON") from None

    def expected_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value else None


def send(
    req: Request, status: int, body: bytes = b"", headers: dict | None = None, *, head: bool = False
) -> None:
    h = req.handler
    h.send_response(status)
    for key, value in {**CORS, "Content-Length": str(len(body)), **(headers or {})}.items():
        h.send_header(key, value)
    h.end_headers()
    if body and not head and req.method != "HEAD":
        h.wfile.write(body)


def send_cut(req: Request, status: int, body: bytes, headers: dict, keep: int) -> None:
    """Promise all of ``body`` (Content-Length), send its first ``keep`` bytes, hang up."""
    h = req.handler
    h.send_response(status)
    for key, value in {**CORS, "Content-Length": str(len(body)), **headers}.items():
        h.send_header(key, value)
    h.end_headers()
    h.wfile.write(body[:keep])
    h.wfile.flush()
    drop(req)


def send_json(req: Request, doc, status: int = 200, headers: dict | None = None) -> None:
    send(
        req,
        status,
        json.dumps(doc).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


def send_error(req: Request, err: Abort) -> None:
    headers = {"Content-Type": "application/json", "X-Error-Message": err.message, **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    send(req, err.status, json.dumps({"error": err.message}).encode(), headers)


def drop(req: Request) -> None:
    """Hang up mid-request: no status line, the socket closed in both directions."""
    req.handler.close_connection = True
    try:
        req.handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single ``bytes=`` range, None for the whole file.

    Raises Abort(416) when the range cannot be satisfied, as browsers expect.
    """
    if not header:
        return None
    m = RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # unsupported forms (multi-range) get the whole file, which RFC 9110 allows
    if not m.group(1):
        start, end = max(0, size - int(m.group(2))), size - 1
    else:
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if start >= size or start > end:
        raise Abort(
            416,
            f"range {header} not satisfiable for {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end
