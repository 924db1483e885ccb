"""HubServer: a Hugging Face Hub-protocol server on 127.0.0.1 for the real ``huggingface_hub``.

Why our own: no server on PyPI takes writes the way the client sends them (see
docs/design.md, "Hub test server"). This one holds repos in a temp folder, checks tokens, makes
commits atomic, and lets tests break any protocol step on purpose.

>>> with HubServer(tmp_path, tokens={"hf_alice": "alice"}) as hub:     # doctest: +SKIP
...     HfApi(endpoint=hub.url, token="hf_alice").create_repo("alice/m")
...     hub.repo("alice/m").tags                                        # read-only view
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from . import api, files, lfs
from .faults import Faults
from .storage import Commit, Repo, RepoView, Storage
from .wire import PREFLIGHT, Abort, Drop, Request, drop, send, send_error

REPO = r"(?P<repo>[^/]+/[^/]+?)"
REV = r"(?P<rev>[^/]+)"
ROUTES = [
    ({"POST"}, r"/api/repos/create", "create_repo", api.create_repo),
    ({"POST"}, r"/api/validate-yaml", "validate_yaml", api.validate_yaml),
    ({"GET"}, r"/api/whoami-v2", "whoami", api.whoami),
    ({"POST"}, rf"/api/models/{REPO}/preupload/{REV}", "preupload", api.preupload),
    ({"POST"}, rf"/api/models/{REPO}/commit/{REV}", "commit", api.commit),
    ({"POST"}, rf"/api/models/{REPO}/tag/{REV}", "tag", api.create_tag),
    ({"GET"}, rf"/api/models/{REPO}/refs", "refs", api.refs),
    ({"GET"}, rf"/api/models/{REPO}/commits/{REV}", "commits", api.commits),
    ({"GET"}, rf"/api/models/{REPO}/tree/{REV}(?:/(?P<path>.*))?", "tree", api.tree),
    ({"GET"}, rf"/api/models/{REPO}(?:/revision/{REV})?", "repo_info", api.repo_info),
    ({"POST"}, rf"/{REPO}\.git/info/lfs/objects/batch", "lfs_batch", lfs.batch),
    ({"PUT"}, r"/_lfs/upload/(?P<ticket>[0-9a-f]+)", "lfs_put", lfs.upload),
    ({"POST"}, rf"/_lfs/verify/{REPO}", "lfs_verify", lfs.verify),
    ({"GET", "HEAD"}, rf"/{REPO}/resolve/{REV}/(?P<path>.+)", "resolve", files.resolve),
]
ROUTES = [(methods, re.compile(pattern), name, fn) for methods, pattern, name, fn in ROUTES]


@dataclass(frozen=True)
class Download:
    """One GET of a file: its path, the Range header asked for (or None), the bytes sent."""

    path: str
    range: str | None
    sent: int


class _Handler(BaseHTTPRequestHandler):
    # One request per connection: stop() then really cuts every client off (no pooled sockets).
    protocol_version = "HTTP/1.0"

    def _go(self):
        self.server.hub.dispatch(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = _go

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


class HubServer:
    """The test Hub. ``tokens`` maps token -> user; ``orgs`` maps org -> members who may write."""

    def __init__(
        self,
        root: Path,
        tokens: dict[str, str] | None = None,
        orgs: dict[str, list[str]] | None = None,
    ):
        self.storage = Storage(Path(root))
        self.tokens = dict(tokens or {})
        self.orgs = {k: set(v) for k, v in (orgs or {}).items()}
        self.faults = Faults()
        self.counters: Counter = Counter()
        self.lfs_puts: list[str] = []
        self.downloads: list[Download] = []
        self.tickets: dict[str, tuple[str, int]] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> HubServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what tests look at -----------------------------------------------------------------------
    def repo(self, repo_id: str) -> RepoView:
        return RepoView(self.storage, repo_id)

    def reset_counters(self) -> None:
        with self._lock:
            self.counters.clear()
            self.lfs_puts.clear()
            self.downloads.clear()

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def record_put(self, oid: str) -> None:
        with self._lock:
            self.lfs_puts.append(oid)

    def record_download(self, path: str, range_: str | None, sent: int) -> None:
        with self._lock:
            self.downloads.append(Download(path, range_, sent))

    # -- auth and lookups (used by the routes) ---------------------------------------------------------
    def user(self, req: Request) -> str | None:
        """The token's user; an unknown token is refused on every endpoint, as on the Hub."""
        auth = req.headers.get("Authorization")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise Abort(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or user in self.orgs.get(namespace, ()))

    def writer(self, req: Request) -> str:
        user = self.user(req)
        if user is None:
            raise Abort(401, "You must be authenticated to write to the Hub")
        return user

    def repo_for_read(self, req: Request, repo_id: str) -> Repo:
        """Private repos are invisible (404 RepoNotFound) to anyone who may not write to them."""
        user = self.user(req)
        repo = self.storage.repos.get(repo_id)
        if repo is None or (repo.private and not self.can_write(user, repo_id.split("/")[0])):
            raise Abort(404, "Repository not found", "RepoNotFound")
        return repo

    def repo_for_write(self, req: Request, repo_id: str) -> Repo:
        user = self.writer(req)
        repo = self.repo_for_read(req, repo_id)
        if not self.can_write(user, repo_id.split("/")[0]):
            raise Abort(403, f"You don't have write access to {repo_id}")
        return repo

    def commit_at(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise Abort(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def fault(self, req: Request, point: str) -> None:
        mode = self.faults.take(point)
        if mode == "drop":
            raise Drop()
        if mode == "500":
            raise Abort(500, f"injected failure at {point}")

    # -- dispatch ---------------------------------------------------------------------------------------
    def dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        req = Request(handler, handler.command, parts.path, dict(parse_qsl(parts.query)))
        try:
            if req.method == "OPTIONS":
                send(req, 204, b"", PREFLIGHT)
                return
            for methods, pattern, name, fn in ROUTES:
                m = pattern.fullmatch(req.path)
                if m and req.method in methods:
                    req.params = m.groupdict()
                    self.count(name)
                    try:
                        fn(self, req)
                    except Abort as err:
                        _drain(req)
                        send_error(req, err)
                    except Drop:
                        drop(req)
                    return
            _drain(req)
            send_error(req, Abort(404, f"no route for {req.method} {req.path}"))
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        except Exception as exc:  # a bug here must reach the test as a 500, not a hang
            send_error(req, Abort(500, f"test hub error: {exc!r}"))


def _drain(req: Request) -> None:
    """Read what the client sent before answering, so it sees the answer, not a reset."""
    try:
        req.body()
    except OSError:
        pass
