"""A directory hub: the Hub's repo/revision model on a plain filesystem (a share, a USB disk,
an air-gapped mirror), servable over HTTP by serve.py with the Hub's resolve URLs.

Layout of ``DIR/<org>/<name>/``::

    objects/ab/cdef…        file contents, named by sha256 (shared by every version)
    commits/<id>.json       a snapshot: {"parent", "files": {path: {"sha256", "size"}}, "version", "date"}
    refs/heads/main         the latest commit id
    refs/tags/v1.0.0        the commit id of a version; written once, never moved

Publishing writes objects, then the commit record, then the refs, each by rename; the tag is
created exclusively (a hard link that fails if it exists), so readers see a whole version or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from packer.bundle.manifest import MANIFEST_NAME, check_path
from packer.errors import HubError
from packer.hub.hf_cache import Fetched
from packer.hub.release import Published, Release, check_same
from packer.support import canonical
from packer.support.names import COMMIT, tag_name

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SERVE_PORT = 8000  # where `packer serve DIR` listens by default
SERVE_URL = f"http://127.0.0.1:{SERVE_PORT}"


def commit_id(parent: str | None, files: dict) -> str:
    """Same parent and same files -> same id, as on the Hub (git-style sha1)."""
    return hashlib.sha1(canonical.dumps({"parent": parent, "files": files})).hexdigest()


@contextlib.contextmanager
def _os_errors(root: Path, doing: str, hint: str):
    """An OSError inside the block becomes one HubError line naming the hub directory."""
    try:
        yield
    except OSError as exc:
        raise HubError(
            f"cannot {doing} hub directory {root}: {exc.strerror or exc}", hint
        ) from None


def _writing(root: Path):
    return _os_errors(root, "write to", "choose a writable --to directory")


def _damaged(root: Path):
    return _os_errors(root, "read from", "the hub directory is damaged or unreadable")


def _atomic_write(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write via a temp file; ``exclusive`` never replaces an existing file (returns False then)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class LocalHub:
    """A hub in directory ``root``.

    >>> hub = LocalHub("/srv/models")                                  # doctest: +SKIP
    >>> hub.publish(release).commit                                     # doctest: +SKIP
    >>> hub.commit_for("sdpack/tiny-sd", "v1.0.0")                      # doctest: +SKIP
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.location = str(self.root.absolute())  # lock records must work from any directory

    # -- reading --------------------------------------------------------------------------------
    def repo_dir(self, repo: str) -> Path:
        return self.root.joinpath(*repo.split("/"))

    def _existing_repo(self, repo: str) -> Path:
        folder = self.repo_dir(repo)
        if not (folder / "refs").is_dir():
            raise HubError(
                f"repository {repo} not found in {self.root}",
                "check the name and the hub directory",
            )
        return folder

    def _ref(self, repo: str, ref: str) -> str | None:
        path = self.repo_dir(repo) / "refs" / ref
        value = path.read_text().strip() if path.is_file() else None
        return value if value and COMMIT.match(value) else None

    def tags(self, repo: str) -> dict[str, str]:
        folder = self._existing_repo(repo) / "refs" / "tags"
        names = (
            sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
            if folder.is_dir()
            else []
        )
        return {n: c for n in names if (c := self._ref(repo, f"tags/{n}"))}

    def commit_for(self, repo: str, rev: str) -> str | None:
        """A tag name, ``main`` or a commit id -> the commit id, or None."""
        self._existing_repo(repo)
        if COMMIT.match(rev):
            return rev if (self.repo_dir(repo) / "commits" / f"{rev}.json").is_file() else None
        if rev == "main":
            return self._ref(repo, "heads/main")
        return (
            self._ref(repo, f"tags/{rev}") if "/" not in rev and not rev.startswith(".") else None
        )

    def snapshot(self, repo: str, commit: str) -> dict[str, dict]:
        """``path -> {sha256, size}`` of a commit; paths and hashes are checked before use."""
        try:
            files = json.loads((self.repo_dir(repo) / "commits" / f"{commit}.json").read_bytes())[
                "files"
            ]
            if not isinstance(files, dict):
                raise TypeError("files is not an object")
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            raise HubError(
                f"{repo}: commit {commit} is unreadable in {self.root}",
                "the hub directory is damaged",
            ) from None
        for path, entry in files.items():
            check_path(path, f"{repo} commit {commit}")
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("sha256"), str)
                or not SHA256.match(entry["sha256"])
            ):
                raise HubError(
                    f"{repo} commit {commit}: bad object id for {path}",
                    "the hub directory is damaged",
                )
        return files

    def object_path(self, repo: str, sha256: str) -> Path:
        return self.repo_dir(repo) / "objects" / sha256[:2] / sha256[2:]

    def read(self, repo: str, commit: str, path: str) -> bytes:
        entry = self.snapshot(repo, commit).get(path)
        if entry is None:
            raise HubError(
                f"{repo}: {path} is missing at commit {commit} in {self.root}",
                "is this an sdpack repository?",
            )
        with _damaged(self.root):
            return self.object_path(repo, entry["sha256"]).read_bytes()

    def url(self, repo: str, commit: str, path: str) -> str:
        """Where a browser loads the file once :meth:`serve_command` runs: `packer serve`'s URL."""
        if path not in self.snapshot(repo, commit):
            raise HubError(
                f"{repo}: {path} is missing at commit {commit} in {self.root}",
                "is this an sdpack repository?",
            )
        return f"{SERVE_URL}/{repo}/resolve/{commit}/{path}"

    def serve_command(self) -> str:
        """The command that serves this hub at the URLs :meth:`url` gives."""
        return f"packer serve {shlex.quote(self.location)} --port {SERVE_PORT}"

    def commit_dates(self, repo: str, commits: set[str]) -> dict[str, str]:
        """``commit -> ISO 8601 date``: recorded at publish time, else the commit record's mtime."""
        dates = {}
        for commit in commits:
            record = self.repo_dir(repo) / "commits" / f"{commit}.json"
            try:
                date = json.loads(record.read_bytes()).get("date")
                if not isinstance(date, str):
                    date = datetime.fromtimestamp(record.stat().st_mtime, UTC).isoformat()
            except (OSError, ValueError, AttributeError):
                raise HubError(
                    f"{repo}: commit {commit} is unreadable in {self.root}",
                    "the hub directory is damaged",
                ) from None
            dates[commit] = date
        return dates

    def download(
        self, repo: str, commit: str, files: list[dict], dest: Path, on_bytes=None
    ) -> Fetched:
        """Copy ``files`` (manifest entries) of ``commit`` into ``dest``; the caller verifies them.

        Copies, not links: a bundle edited in place must never change the hub's objects."""
        snapshot, done = self.snapshot(repo, commit), Fetched()
        for entry in files:
            path = entry["path"]
            if path not in snapshot:
                raise HubError(
                    f"{repo}: {path} is missing at commit {commit} in {self.root}",
                    "the hub directory is damaged",
                )
            target = Path(dest) / path
            with _damaged(self.root):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.object_path(repo, snapshot[path]["sha256"]), target)
            done.count(downloaded=target.stat().st_size)
            if on_bytes:
                on_bytes(entry["size"])
        return done

    # -- writing ----------------------------------------------------------------------------------
    def _put_object(self, repo: str, content: Path | bytes) -> tuple[str, int, bool]:
        """Store content under its sha256; return (sha256, size, whether bytes were written)."""
        sha = (
            canonical.sha256_file(content)
            if isinstance(content, Path)
            else canonical.sha256_bytes(content)
        )
        size = content.stat().st_size if isinstance(content, Path) else len(content)
        dest = self.object_path(repo, sha)
        if dest.is_file() and dest.stat().st_size == size:
            return sha, size, False
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".object.", dir=dest.parent)
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, Path):
                with open(content, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
            else:
                f.write(content)
        os.replace(tmp, dest)
        return sha, size, True

    def _published(
        self, release: Release, commit: str, uploaded: list[str], already: bool
    ) -> Published:
        return Published(
            release.repo,
            release.version,
            commit,
            release.manifest_sha256,
            str(self.root),
            uploaded,
            already,
        )

    def _existing(self, release: Release) -> Published | None:
        if not (self.repo_dir(release.repo) / "refs").is_dir():
            return None
        commit = self.commit_for(release.repo, release.tag)
        if commit is None:
            return None
        check_same(
            release,
            canonical.sha256_bytes(self.read(release.repo, commit, MANIFEST_NAME)),
            str(self.root),
        )
        return self._published(release, commit, [], True)

    def publish(self, release: Release) -> Published:
        """Publish ``release`` as tag v<version>; a no-op if that exact version is already there."""
        repo = release.repo
        with _writing(self.root):
            if (done := self._existing(release)) is not None:
                return done
            files, uploaded = {}, []
            for path, content in sorted(release.files.items()):
                sha, size, wrote = self._put_object(repo, content)
                files[path] = {"sha256": sha, "size": size}
                if wrote:
                    uploaded.append(path)
            head = self._ref(repo, "heads/main")
            same_as_head = head is not None and self.snapshot(repo, head) == files
            commit = head if same_as_head else commit_id(head, files)
            date = datetime.now(UTC).isoformat(timespec="seconds")
            record = canonical.dumps(
                {"parent": head, "files": files, "version": release.version, "date": date}
            )
            if not same_as_head:
                _atomic_write(self.repo_dir(repo) / "commits" / f"{commit}.json", record)
                _atomic_write(
                    self.repo_dir(repo) / "refs" / "heads" / "main", f"{commit}\n".encode()
                )
            if not _atomic_write(
                self.repo_dir(repo) / "refs" / "tags" / tag_name(release.version),
                f"{commit}\n".encode(),
                exclusive=True,
            ):
                return self._existing(
                    release
                )  # another publisher won the race with the same version
        return self._published(release, commit, uploaded, False)
