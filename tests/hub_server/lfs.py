"""Git LFS over HTTP: the batch API, the upload PUT and the verify POST.

The batch answer omits ``actions`` for objects already stored: that is how the Hub
deduplicates, and what tests count to prove unchanged shards are not uploaded again.
Upload URLs carry a one-off ticket instead of the token (the client sends no auth to them,
as to S3 presigned URLs).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets

from .wire import Abort, Drop, Request, send, send_json

OID = re.compile(r"^[0-9a-f]{64}$")
LFS_JSON = {"Content-Type": "application/vnd.git-lfs+json"}


def batch(hub, req: Request) -> None:
    """POST /{repo}.git/info/lfs/objects/batch"""
    repo = hub.repo_for_write(req, req.params["repo"])
    hub.fault(req, "lfs_batch")
    body = req.json() or {}
    if body.get("operation") != "upload":
        raise Abort(400, "this test hub only takes LFS uploads through the batch API")
    objects = []
    for obj in body.get("objects", []):
        oid, size = obj.get("oid", ""), obj.get("size")
        if not OID.match(oid) or not isinstance(size, int) or size < 0:
            objects.append(
                {
                    "oid": str(oid),
                    "size": int(size or 0),
                    "error": {"code": 422, "message": "bad oid or size"},
                }
            )
            continue
        if hub.storage.has_object(oid, size):
            objects.append({"oid": oid, "size": size})
            continue
        ticket = secrets.token_hex(16)
        with hub.storage.lock:
            hub.tickets[ticket] = (oid, size)
        objects.append(
            {
                "oid": oid,
                "size": size,
                "authenticated": True,
                "actions": {
                    "upload": {"href": f"{hub.url}/_lfs/upload/{ticket}"},
                    "verify": {"href": f"{hub.url}/_lfs/verify/{repo.repo_id}"},
                },
            }
        )
    send(req, 200, json.dumps({"transfer": "basic", "objects": objects}).encode(), LFS_JSON)


def upload(hub, req: Request) -> None:
    """PUT /_lfs/upload/{ticket} — the object appears only if its bytes hash to the oid."""
    ticket = hub.tickets.get(req.params["ticket"])
    if ticket is None:
        raise Abort(403, "unknown or expired upload ticket")
    oid, size = ticket
    mode = hub.faults.take("lfs_put")
    if mode == "half":
        req.body(limit=max(1, size // 2))
        raise Drop()
    if mode == "drop":
        raise Drop()
    data = req.body()
    if mode == "500":
        raise Abort(500, "injected failure")
    if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
        raise Abort(400, f"uploaded bytes do not match oid {oid} / size {size}")
    hub.storage.put_object(data)
    hub.record_put(oid)
    send(req, 200)


def verify(hub, req: Request) -> None:
    """POST /_lfs/verify/{repo} {oid, size}"""
    hub.repo_for_write(req, req.params["repo"])
    hub.fault(req, "lfs_verify")
    body = req.json() or {}
    if not hub.storage.has_object(body.get("oid", ""), body.get("size")):
        raise Abort(404, f"object {body.get('oid')} not found")
    send_json(req, {"success": True})
