"""The JSON API under /api: repos, preupload, commits, tags, refs, tree and repo info."""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
from fnmatch import fnmatch
from urllib.parse import unquote

from .metadata import errors_and_warnings
from .storage import Entry, lfs_pointer
from .wire import Abort, Request, send_json

LFS_MIN_SIZE = 10 * 1024  # the Hub uses 10 MB; scaled down so small test shards exercise LFS


def create_repo(hub, req: Request) -> None:
    """POST /api/repos/create — 409 still carries {"url"}: the client reads it with exist_ok."""
    user = hub.writer(req)
    hub.fault(req, "create_repo")
    body = req.json() or {}
    namespace, name = body.get("organization") or user, body.get("name") or ""
    repo_id = f"{namespace}/{name}"
    if body.get("type", "model") != "model":
        raise Abort(400, "this test hub only hosts models")
    if not hub.can_write(user, namespace):
        raise Abort(
            403, f"You don't have the rights to create a model under the namespace {namespace}"
        )
    url = f"{hub.url}/{repo_id}"
    with hub.storage.lock:
        exists = repo_id in hub.storage.repos
        if not exists:
            hub.storage.create_repo(
                repo_id, bool(body.get("private")) or body.get("visibility") == "private"
            )
    if exists:
        send_json(req, {"error": "You already created this model repo", "url": url}, 409)
    else:
        send_json(req, {"url": url, "name": repo_id})


def validate_yaml(hub, req: Request) -> None:
    """POST /api/validate-yaml — the card's metadata checked as the Hub types it (metadata.py)."""
    errors, warnings = errors_and_warnings(str((req.json() or {}).get("content", "")))
    send_json(
        req,
        {
            "errors": [{"message": e} for e in errors],
            "warnings": [{"message": w} for w in warnings],
        },
        400 if errors else 200,
    )


def whoami(hub, req: Request) -> None:
    user = hub.user(req)
    if user is None:
        raise Abort(401, "Invalid credentials in Authorization header")
    orgs = [{"name": org} for org, members in hub.orgs.items() if user in members]
    send_json(req, {"type": "user", "name": user, "orgs": orgs, "auth": {"type": "access_token"}})


def _is_lfs(path: str, sample: bytes, size: int, gitattributes: str) -> bool:
    """The Hub's rule: a `filter=lfs` pattern of .gitattributes, binary content, or a large file."""
    name = posixpath.basename(path)
    for line in gitattributes.splitlines():
        parts = line.split()
        if (
            len(parts) > 1
            and "filter=lfs" in parts[1:]
            and (fnmatch(name, parts[0]) or fnmatch(path, parts[0]))
        ):
            return True
    return b"\0" in sample or size >= LFS_MIN_SIZE


def preupload(hub, req: Request) -> None:
    """POST /api/models/{repo}/preupload/{rev} — upload mode per file, plus the oid it has now."""
    repo = hub.repo_for_write(req, req.params["repo"])
    hub.fault(req, "preupload")
    head = hub.commit_at(repo, unquote(req.params["rev"]))
    attrs_entry = head.tree.get(".gitattributes")
    attrs = hub.storage.read_object(attrs_entry.sha256).decode() if attrs_entry else ""
    answer = []
    for f in (req.json() or {}).get("files", []):
        sample = base64.b64decode(f.get("sample", ""))
        lfs = _is_lfs(f["path"], sample, int(f["size"]), attrs)
        existing = head.tree.get(f["path"])
        oid = None
        if existing is not None:
            oid = existing.sha256 if lfs else existing.git_oid
        answer.append(
            {
                "path": f["path"],
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False,
                "oid": oid,
            }
        )
    send_json(req, {"files": answer, "commitOid": head.oid})


def _clean_path(path) -> str:
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or any(p in ("", ".", "..") for p in path.split("/"))
    ):
        raise Abort(400, f"invalid path {path!r}")
    return path


def _apply(hub, tree: dict, key: str, value: dict) -> None:
    """Apply one NDJSON operation to ``tree`` (a copy: nothing is visible until the ref moves)."""
    path = _clean_path(
        value.get("path", "").rstrip("/") if key == "deletedFolder" else value.get("path")
    )
    if key == "file":
        try:
            data = base64.b64decode(value["content"], validate=True)
        except (KeyError, binascii.Error):
            raise Abort(400, f"{path}: bad base64 content") from None
        tree[path] = Entry.make(hub.storage.put_object(data), len(data), False, data)
    elif key == "lfsFile":
        oid, size = value.get("oid", ""), value.get("size")
        if value.get("algo", "sha256") != "sha256" or not hub.storage.has_object(oid, size):
            raise Abort(422, f"{path}: LFS object {oid} was never uploaded")
        tree[path] = Entry.make(oid, hub.storage.object_path(oid).stat().st_size, True)
    elif key == "deletedFile":
        if tree.pop(path, None) is None:
            raise Abort(404, f"{path}: A file with this name doesn't exist", "EntryNotFound")
    elif key == "deletedFolder":
        gone = [p for p in tree if p.startswith(path + "/")]
        if not gone:
            raise Abort(404, f"{path}: A folder with this name doesn't exist", "EntryNotFound")
        for p in gone:
            del tree[p]
    else:
        raise Abort(400, f"unknown commit operation {key!r}")


def commit(hub, req: Request) -> None:
    """POST /api/models/{repo}/commit/{rev} — validate every operation, then move the branch once."""
    repo = hub.repo_for_write(req, req.params["repo"])
    hub.fault(req, "commit")
    branch = unquote(req.params["rev"])
    if branch not in repo.branches:
        raise Abort(404, f"Invalid rev id: {branch}", "RevisionNotFound")
    lines = [json.loads(line) for line in req.body().splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise Abort(400, "commit payload must start with a header")
    header = lines[0]["value"]
    tree = dict(repo.commits[repo.branches[branch]].tree)
    for line in lines[1:]:
        _apply(hub, tree, line.get("key"), line.get("value") or {})
    try:
        new = hub.storage.commit(
            repo, branch, tree, header.get("summary", ""), header.get("parentCommit")
        )
    except ValueError as exc:
        raise Abort(412, str(exc)) from None
    url = f"{hub.url}/{repo.repo_id}/commit/{new.oid}"
    send_json(
        req, {"commitOid": new.oid, "commitUrl": url, "pullRequestUrl": None, "success": True}
    )


def create_tag(hub, req: Request) -> None:
    """POST /api/models/{repo}/tag/{rev} — tags never move: 409 if the name is taken."""
    repo = hub.repo_for_write(req, req.params["repo"])
    hub.fault(req, "tag")
    target = hub.commit_at(repo, unquote(req.params["rev"]))
    tag = (req.json() or {}).get("tag", "")
    if not tag or "/" in tag or tag in repo.branches:
        raise Abort(400, f"invalid tag name {tag!r}")
    with hub.storage.lock:
        if tag in repo.tags:
            raise Abort(409, f"Tag {tag} already exists")
        repo.tags[tag] = target.oid
    send_json(req, {"success": True})


def refs(hub, req: Request) -> None:
    repo = hub.repo_for_read(req, req.params["repo"])

    def ref(kind, name, oid):
        return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

    doc = {
        "branches": [ref("heads", n, o) for n, o in sorted(repo.branches.items())],
        "tags": [ref("tags", n, o) for n, o in sorted(repo.tags.items())],
        "converts": [],
    }
    if req.query.get("include_prs"):
        doc["pullRequests"] = []
    send_json(req, doc)


def commits(hub, req: Request) -> None:
    """GET /api/models/{repo}/commits/{rev} — the history from ``rev`` back, newest first, one page."""
    repo = hub.repo_for_read(req, req.params["repo"])
    commit_ = hub.commit_at(repo, unquote(req.params["rev"]))
    history = []
    while commit_ is not None:
        history.append(
            {
                "id": commit_.oid,
                "title": commit_.title,
                "message": "",
                "authors": [],
                "date": commit_.date,
            }
        )
        commit_ = repo.commits.get(commit_.parent) if commit_.parent else None
    send_json(req, history)


def _file_doc(path: str, e: Entry) -> dict:
    doc = {"type": "file", "oid": e.git_oid, "size": e.size, "path": path}
    if e.lfs:
        doc["lfs"] = {
            "oid": e.sha256,
            "size": e.size,
            "pointerSize": len(lfs_pointer(e.sha256, e.size)),
        }
    return doc


def tree(hub, req: Request) -> None:
    """GET /api/models/{repo}/tree/{rev}[/{path}] — folders first, one page."""
    repo = hub.repo_for_read(req, req.params["repo"])
    commit_ = hub.commit_at(repo, unquote(req.params["rev"]))
    prefix = unquote(req.params.get("path") or "").strip("/")
    recursive = req.query.get("recursive", "").lower() in ("1", "true")
    under = {p: e for p, e in commit_.tree.items() if not prefix or p.startswith(prefix + "/")}
    if prefix and not under:
        raise Abort(404, f"{prefix} does not exist at {commit_.oid}", "EntryNotFound")
    files, folders = [], set()
    for path, entry in sorted(under.items()):
        rest = path[len(prefix) + 1 :] if prefix else path
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            folders.add("/".join(([prefix] if prefix else []) + parts[:depth]))
        if recursive or len(parts) == 1:
            files.append(_file_doc(path, entry))
    if not recursive:
        depth = prefix.count("/") + 1 if prefix else 0
        folders = {f for f in folders if f.count("/") == depth}
    listing = [
        {"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)
    ]
    send_json(req, listing + files)


def repo_info(hub, req: Request) -> None:
    """GET /api/models/{repo}[/revision/{rev}] — id, sha and every file of the revision."""
    repo = hub.repo_for_read(req, req.params["repo"])
    commit_ = hub.commit_at(repo, unquote(req.params.get("rev") or "main"))
    siblings = []
    for path, e in sorted(commit_.tree.items()):
        doc = {"rfilename": path, "size": e.size, "blobId": e.git_oid}
        if e.lfs:
            doc["lfs"] = {
                "sha256": e.sha256,
                "size": e.size,
                "pointerSize": len(lfs_pointer(e.sha256, e.size)),
            }
        siblings.append(doc)
    namespace = repo.repo_id.split("/")[0]
    send_json(
        req,
        {
            "id": repo.repo_id,
            "author": namespace,
            "sha": commit_.oid,
            "private": repo.private,
            "tags": [],
            "siblings": siblings,
        },
    )
