"""The test Hub's state: content-addressed objects, commits, branches and tags.

Why content-addressed: the real Hub deduplicates LFS objects by sha256 across versions and
repos, and tags point at immutable commits. Tests assert both, so the model here is git's:
an object store keyed by sha256, trees as ``path -> Entry`` maps, and commit ids that hash the
parent and the tree. A ref moves only after a whole commit validated (all files or none).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_GITATTRIBUTES = b"".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n".encode()
    for pattern in (
        "*.bin",
        "*.safetensors",
        "*.zst",
        "*.ckpt",
        "*.pt",
        "*.onnx",
        "*.wasm",
        "*.so",
        "*.zip",
    )
)


def git_blob_oid(data: bytes) -> str:
    """git's object id of a blob (what the Hub reports as a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


@dataclass(frozen=True)
class Entry:
    """One file of a tree. LFS files are listed by their pointer's git oid, as on the Hub."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str

    @classmethod
    def make(cls, sha256: str, size: int, lfs: bool, data: bytes | None = None) -> Entry:
        blob = lfs_pointer(sha256, size) if lfs else data
        return cls(sha256, size, lfs, git_blob_oid(blob))


def now() -> str:
    """The time as the Hub writes commit dates: ISO 8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    tree: dict  # path -> Entry
    title: str
    date: str = field(default_factory=now)  # not part of the oid: content and parent only


def commit_oid(parent: str | None, tree: dict[str, Entry]) -> str:
    """A stable id: the same parent and the same files always give the same commit."""
    body = {"parent": parent, "tree": sorted((p, e.sha256, e.size, e.lfs) for p, e in tree.items())}
    return hashlib.sha1(json.dumps(body).encode()).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict = field(default_factory=dict)  # name -> commit oid
    tags: dict = field(default_factory=dict)  # name -> commit oid
    commits: dict = field(default_factory=dict)  # oid -> Commit

    def resolve(self, rev: str) -> Commit | None:
        """A branch, a tag or a full commit id, as the Hub accepts in URLs."""
        oid = self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)
        return self.commits.get(oid) if oid else None


class Storage:
    """Objects on disk under ``root``; repos and refs in memory behind one lock."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()

    # -- objects --------------------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256[2:]

    def has_object(self, sha256: str, size: int | None = None) -> bool:
        path = self.object_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_object(self, data: bytes) -> str:
        """Store bytes under their sha256 (idempotent; a rename makes it appear whole)."""
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_object(sha):
            self.object_path(sha).parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.objects)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.object_path(sha))
        return sha

    def read_object(self, sha256: str) -> bytes:
        return self.object_path(sha256).read_bytes()

    # -- repos ----------------------------------------------------------------------------------
    def create_repo(self, repo_id: str, private: bool) -> Repo:
        """A new repo starts with one commit holding the Hub's default .gitattributes."""
        repo = Repo(repo_id, private)
        sha = self.put_object(DEFAULT_GITATTRIBUTES)
        tree = {
            ".gitattributes": Entry.make(
                sha, len(DEFAULT_GITATTRIBUTES), False, DEFAULT_GITATTRIBUTES
            )
        }
        first = Commit(commit_oid(None, tree), None, tree, "initial commit")
        repo.commits[first.oid] = first
        repo.branches["main"] = first.oid
        self.repos[repo_id] = repo
        return repo

    def commit(
        self, repo: Repo, branch: str, tree: dict[str, Entry], title: str, expect_parent: str | None
    ) -> Commit:
        """Move ``branch`` to a new commit of ``tree``; the one step that makes files visible."""
        with self.lock:
            parent = repo.branches[branch]
            if expect_parent is not None and expect_parent != parent:
                raise ValueError(f"parent commit {expect_parent} is not the head of {branch}")
            new = Commit(commit_oid(parent, tree), parent, dict(tree), title)
            repo.commits.setdefault(new.oid, new)
            repo.branches[branch] = new.oid
            return new


class RepoView:
    """Read-only view for tests: what a client could see, without going through HTTP."""

    def __init__(self, storage: Storage, repo_id: str):
        self._storage, self.repo_id = storage, repo_id

    @property
    def _repo(self) -> Repo | None:
        return self._storage.repos.get(self.repo_id)

    @property
    def exists(self) -> bool:
        return self._repo is not None

    @property
    def branches(self) -> dict[str, str]:
        return dict(self._repo.branches) if self._repo else {}

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._repo.tags) if self._repo else {}

    @property
    def commit_count(self) -> int:
        return len(self._repo.commits) if self._repo else 0

    def files(self, rev: str = "main") -> dict[str, str]:
        """``path -> sha256`` of the files visible at ``rev`` ({} if the rev does not exist)."""
        commit = self._repo.resolve(rev) if self._repo else None
        return {p: e.sha256 for p, e in commit.tree.items()} if commit else {}

    def read(self, rev: str, path: str) -> bytes:
        return self._storage.read_object(self._repo.resolve(rev).tree[path].sha256)
