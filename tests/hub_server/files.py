"""GET/HEAD /{repo}/resolve/{rev}/{path}: what hf_hub_download and browsers fetch.

The client's HEAD needs ``X-Repo-Commit`` and an etag (``X-Linked-Etag`` for LFS files, whose
etag is their sha256) or it reports the file as missing; browsers need CORS and Range. Every
GET is recorded (``server.downloads``: path, Range header, bytes sent) so tests can tell a
resumed download from a fresh one.
"""

from __future__ import annotations

from urllib.parse import unquote

from .wire import Abort, Drop, Request, byte_range, send, send_cut


def resolve(hub, req: Request) -> None:
    repo = hub.repo_for_read(req, req.params["repo"])
    hub.fault(req, "resolve")
    commit = hub.commit_at(repo, unquote(req.params["rev"]))
    path = unquote(req.params["path"])
    entry = commit.tree.get(path)
    if entry is None:
        raise Abort(
            404,
            f"{path} does not exist at {commit.oid}",
            "EntryNotFound",
            {"X-Repo-Commit": commit.oid},
        )
    headers = {
        "X-Repo-Commit": commit.oid,
        "ETag": f'"{entry.sha256 if entry.lfs else entry.git_oid}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Cache-Control": "public, max-age=31536000, immutable"
        if req.params["rev"] == commit.oid
        else "no-cache",
    }
    if entry.lfs:
        headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
    span = byte_range(req.headers.get("Range"), entry.size)
    if req.method == "HEAD":
        send(req, 200, b"", {**headers, "Content-Length": str(entry.size)})
        return
    mode = hub.faults.take("download", path)
    if mode == "drop":
        raise Drop()
    if mode == "500":
        raise Abort(500, f"injected failure downloading {path}")
    data = hub.storage.read_object(entry.sha256)
    status = 200
    if span is not None:
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        status, data = 206, data[start : end + 1]
    if mode == "cut":
        hub.record_download(path, req.headers.get("Range"), len(data) // 2)
        send_cut(req, status, data, headers, len(data) // 2)
        return
    hub.record_download(path, req.headers.get("Range"), len(data))
    send(req, status, data, headers)
