"""`packer pull` from a Hub through the Hugging Face cache: resumable, verified, shared.

The files of a commit land in huggingface_hub's own cache layout, under ``HF_HUB_CACHE``
(``HF_HOME/hub``), so every tool that reads that cache sees them and every version that shares a
shard shares its bytes::

    models--ORG--NAME/blobs/<etag>                  contents (etag: sha256 for LFS files, git blob id else)
    models--ORG--NAME/blobs/<sha256>.incomplete     a download in progress, kept when it is cut off
    models--ORG--NAME/snapshots/<commit>/<path>     relative symlink to the blob
    .locks/models--ORG--NAME/<sha256>.lock          one writer per file, the lock the client takes too

Why the download is ours: huggingface_hub 2.x writes each download to a file unique to the
process and deletes it when the transfer fails, so a cut-off pull of a 2 GB bundle would start
over. Here the partial file stays, and the next run asks for the rest with an HTTP Range request.

Nothing from the cache is trusted: a file found there (from an earlier pull, another version, or
the client itself) is checked against the manifest's size and sha256 before it is used; a bad one
is deleted and fetched again. A fresh download that does not match is deleted and refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packer.errors import BundleError, HubError
from packer.support import canonical

RETRY_DELAYS = (
    0.5,
    1.5,
)  # seconds before the second and third attempt of a transfer that was cut off
WORKERS = 8  # files downloaded at once, as huggingface_hub's snapshot_download does
CHUNK = 1 << 20
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def cache_dir() -> Path:
    """The client's hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), as the client resolved it."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo: str) -> Path:
    return cache_dir() / ("models--" + repo.replace("/", "--"))


def git_blob_id(path: Path) -> str:
    """git's id of a file's content: how the Hub names a regular (non-LFS) file."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def matches_name(path: Path) -> bool:
    """Whether a cache blob's content matches its name (sha256 or git blob id); other names pass."""
    name = path.name
    if HEX64.match(name):
        return _sha256(path) == name
    if HEX40.match(name):
        return git_blob_id(path) == name
    return True


def _sha256(path: Path) -> str:
    return canonical.sha256_file(path, CHUNK)


def forget(*paths: Path) -> None:
    """Remove cache entries (links and what they point at); missing ones are fine."""
    for path in paths:
        real = path.resolve() if path.is_symlink() else None
        for p in (path, real):
            if p is not None:
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass


def link_or_copy(src: Path, dest: Path) -> None:
    """A hard link where the filesystem allows it (no second copy of a large shard), else a copy.

    A linked file shares its bytes with the cache: a bundle file changed in place changes the
    cached one too, which the next pull detects (every cached file is verified) and fetches again."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


@dataclass
class Fetched:
    """What :meth:`CommitFiles.fetch` did: blobs per path, bytes sent over the network, repairs."""

    blobs: dict[str, Path] = field(default_factory=dict)
    downloaded: int = 0
    reused: int = 0  # files that were already in the cache, intact
    repaired: list[str] = field(default_factory=list)  # cached files that failed verification
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, downloaded: int = 0, reused: int = 0, repaired: str | None = None) -> None:
        with self._lock:
            self.downloaded += downloaded
            self.reused += reused
            if repaired is not None and repaired not in self.repaired:
                self.repaired.append(repaired)


class _Stopped(Exception):
    """Another file failed or the user interrupted: stop this transfer, keep what arrived."""


class CommitFiles:
    """The files of one commit of ``repo`` in the cache, fetched from ``endpoint`` when missing.

    >>> files = CommitFiles("sdpack/tiny-sd", commit, "https://huggingface.co", headers, "https://huggingface.co")  # doctest: +SKIP
    >>> files.fetch(manifest["files"]).blobs["weights/unet/params_shard_0.bin.zst"]                                  # doctest: +SKIP
    """

    def __init__(self, repo: str, commit: str, endpoint: str, headers: dict, location: str):
        self.repo, self.commit, self.endpoint, self.headers, self.location = (
            repo,
            commit,
            endpoint,
            headers,
            location,
        )
        self.folder = repo_folder(repo)
        self.blobs = self.folder / "blobs"
        self.snapshot = self.folder / "snapshots" / commit
        self.locks = cache_dir() / ".locks" / self.folder.name
        self._stop = threading.Event()

    def fetch(self, files: list[dict], on_bytes: Callable[[int], None] | None = None) -> Fetched:
        """Every ``{path, size, sha256}`` in ``files``, verified, as blob paths in the cache.

        ``on_bytes`` hears of every byte checked or received (negative when a transfer restarts),
        so a progress bar over the total size of ``files`` ends full.
        """
        done = Fetched()
        advance = on_bytes or (lambda n: None)
        if not files:
            return done
        with ThreadPoolExecutor(
            max_workers=min(WORKERS, len(files)), thread_name_prefix="sdpack-pull"
        ) as pool:
            futures = [pool.submit(self._one, entry, advance, done) for entry in files]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self._stop.set()  # the others stop at their next block; their partial files stay
                for future in futures:
                    future.cancel()
                raise
        return done

    # -- one file --------------------------------------------------------------------------------
    def _one(self, entry: dict, advance: Callable[[int], None], done: Fetched) -> None:
        from huggingface_hub.utils import WeakFileLock

        path, sha256 = entry["path"], entry["sha256"]
        self.locks.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(self.locks / f"{sha256}.lock"):
            blob = self._cached(entry, advance, done)
            if blob is None:
                blob = self._download(entry, advance, done)
            self._link_snapshot(path, blob)
            done.blobs[path] = blob.resolve()

    def _cached(self, entry: dict, advance: Callable[[int], None], done: Fetched) -> Path | None:
        """The intact cached copy of ``entry``: this commit's snapshot entry, else the blob named by its sha256."""
        link = self.snapshot / entry["path"]
        for candidate in (link, self.blobs / entry["sha256"]):
            if not candidate.exists():
                continue
            if candidate.stat().st_size == entry["size"] and _sha256(candidate) == entry["sha256"]:
                advance(entry["size"])
                done.count(reused=1)
                return candidate.resolve()
            done.count(repaired=entry["path"])
            forget(candidate)
        return None

    def _download(self, entry: dict, advance: Callable[[int], None], done: Fetched) -> Path:
        """Fetch into ``<sha256>.incomplete`` (resuming it), verify, and move it into place."""
        path, size, sha256 = entry["path"], entry["size"], entry["sha256"]
        partial = self.blobs / f"{sha256}.incomplete"
        self.blobs.mkdir(parents=True, exist_ok=True)
        kept = partial.stat().st_size if partial.is_file() else 0
        advance(min(kept, size))
        etag = self._transfer(path, partial, size, advance, done)
        if _sha256(partial) != sha256:
            partial.unlink()
            advance(-size)
            if kept:  # the kept part may be what is wrong: one more try, from the first byte
                return self._download(entry, advance, done)
            raise BundleError(
                f"{path}: sha256 mismatch in what {self.location} sent for {self.repo}@{self.commit[:12]}",
                "the download was deleted; nothing was written to --out. Try again later, or report it to the hub",
            )
        name = (
            etag
            if etag and (etag == sha256 or (HEX40.match(etag) and git_blob_id(partial) == etag))
            else sha256
        )
        blob = self.blobs / name
        os.replace(partial, blob)
        return blob

    def _transfer(self, path: str, partial: Path, size: int, advance, done: Fetched) -> str | None:
        """Bring ``partial`` to ``size`` bytes; returns the file's etag when the server told it."""
        from huggingface_hub import hf_hub_url

        from packer.hub.hf import transport_errors

        url = hf_hub_url(self.repo, path, revision=self.commit, endpoint=self.endpoint)
        etag = None
        for attempt in range(len(RETRY_DELAYS) + 1):
            have = partial.stat().st_size if partial.is_file() else 0
            if have > size:
                partial.unlink()
                advance(-size)
                have = 0
            if have == size:
                return etag
            try:
                etag = self._get(url, partial, have, advance, done) or etag
            except transport_errors() as exc:
                if attempt == len(RETRY_DELAYS):
                    kept = partial.stat().st_size if partial.is_file() else 0
                    raise HubError(
                        f"cannot reach {self.location} while downloading {path} ({type(exc).__name__})",
                        f"{kept} of {size} bytes are kept in the Hugging Face cache: run the same command again to resume",
                    ) from None
                time.sleep(RETRY_DELAYS[attempt])
        if partial.stat().st_size != size:
            raise HubError(
                f"{self.location} sent {partial.stat().st_size} bytes of {path}, not {size}",
                "run the same command again",
            )
        return etag

    def _get(self, url: str, partial: Path, have: int, advance, done: Fetched) -> str | None:
        """One GET from byte ``have`` on, appended to ``partial``; a server that ignores Range restarts it."""
        from huggingface_hub.utils import get_session, hf_raise_for_status

        headers = {**self.headers, "Accept-Encoding": "identity"}  # byte offsets of the file itself
        if have:
            headers["Range"] = f"bytes={have}-"
        with get_session().stream("GET", url, headers=headers, follow_redirects=True) as response:
            hf_raise_for_status(response)
            identity = response.headers.get("Content-Encoding", "identity").lower() == "identity"
            resumes = (
                have and identity and response.status_code == 206 and _range_start(response) == have
            )
            if have and not resumes:
                advance(-have)
            etag = _etag(response)
            with open(partial, "ab" if resumes else "wb") as f:
                for block in (
                    response.iter_bytes()
                ):  # as it arrives: a cut-off transfer keeps every byte received
                    if self._stop.is_set():
                        raise _Stopped()
                    f.write(block)
                    done.count(downloaded=len(block))
                    advance(len(block))
        return etag

    def _link_snapshot(self, path: str, blob: Path) -> None:
        """``snapshots/<commit>/<path>`` -> the blob, relative as the client makes it (best effort:
        without symlinks the blob is still found by its sha256 next time)."""
        link = self.snapshot / path
        if link.is_symlink() and link.resolve() == blob.resolve():
            return
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:
            pass


def _range_start(response) -> int | None:
    m = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _etag(response) -> str | None:
    """The file's etag as the client reads it: ``X-Linked-Etag`` (LFS, on the redirect), else ``ETag``."""
    for r in (*response.history, response):
        value = r.headers.get("X-Linked-Etag") or r.headers.get("ETag")
        if value:
            return value.removeprefix("W/").strip('"')
    return None
