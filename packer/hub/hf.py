"""Publishing to and reading from a Hugging Face Hub through ``huggingface_hub.HfApi``.

A version is ONE commit holding the whole bundle, then a tag ``vX.Y.Z`` on that commit: a
reader never sees half a version, and the tag pins a snapshot that never changes. Unchanged
files cost nothing the second time: the client skips files whose oid the Hub already has at
``main``, and the Hub's LFS store deduplicates shards by sha256.

Every client error leaves this module as a one-line :class:`HubError`; the token is never part
of a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from packer.errors import HubError
from packer.hub import card
from packer.hub.hf_cache import Fetched
from packer.hub.release import Published, Release, check_same
from packer.support import canonical, progress
from packer.support.names import COMMIT
from packer.support.spec import MANIFEST_NAME

DEFAULT_ENDPOINT = "https://huggingface.co"
KEEP = {".gitattributes"}  # Hub-managed files a release never deletes
LARGE = 10 << 20  # above this the Hub always stores a file in LFS
AUTH_HINT = "set HF_TOKEN or run `hf auth login`"


def endpoint_of(endpoint: str | None = None) -> str:
    """``--endpoint``, else ``HF_ENDPOINT`` (read now, not at import as the client does), else the Hub."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def shown(endpoint: str) -> str:
    """The endpoint as messages show it: without any user:password part."""
    parts = urlsplit(endpoint)
    return (
        urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
        if parts.hostname
        else endpoint
    )


def transport_errors() -> tuple[type[BaseException], ...]:
    import httpx2  # the client's transport (huggingface-hub 2)

    return (httpx2.TransportError, ConnectionError, TimeoutError)


def _translate(exc: BaseException, endpoint: str, repo: str, doing: str) -> HubError | None:
    """The first error in ``exc``'s cause chain that we know, as a HubError; None if unknown."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = shown(endpoint)
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, HfHubHTTPError) and status in (401, 403):
            detail = f": the token may not write to {repo.split('/')[0]}" if status == 403 else ""
            return HubError(f"authentication failed for {repo} at {where}{detail}", AUTH_HINT)
        if isinstance(exc, RepositoryNotFoundError):
            return HubError(
                f"repository {repo} not found at {where}",
                f"check the name; a private repository needs a token ({AUTH_HINT})",
            )
        if isinstance(exc, RevisionNotFoundError):
            return HubError(
                f"{repo}: revision not found at {where} ({doing})", "check the version or commit"
            )
        if isinstance(exc, RemoteEntryNotFoundError):
            return HubError(
                f"{repo}: a file is missing at the requested revision on {where} ({doing})",
                "is this an sdpack repository?",
            )
        if isinstance(exc, ValueError) and str(exc).startswith("Invalid metadata in README.md"):
            return HubError(
                f"{where} refused the model card's metadata: {' '.join(str(exc).split()[4:])[:300]}",
                card.HINT,
            )
        if isinstance(exc, HfHubHTTPError):
            return HubError(
                f"{where} answered HTTP {status} while {doing}",
                "try again later; finished uploads are kept",
            )
        if isinstance(exc, transport_errors() + (LocalEntryNotFoundError,)):
            return HubError(
                f"cannot reach {where} while {doing}",
                "check the network or --endpoint, then run the same command again",
            )
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def hub_errors(endpoint: str, repo: str, doing: str):
    """Turn what the client raises into one HubError line (client messages are never shown)."""
    try:
        yield
    except HubError:
        raise
    except Exception as exc:
        err = _translate(exc, endpoint, repo, doing)
        if err is None:
            raise
        raise err from None


@contextlib.contextmanager
def cache_errors():
    """A file-system failure in the Hugging Face cache (not writable, disk full) as one HubError line."""
    try:
        yield
    except HubError:
        raise
    except OSError as exc:
        from huggingface_hub import constants

        where = exc.filename or constants.HF_HUB_CACHE
        raise HubError(
            f"cannot write to the Hugging Face cache ({where}): {exc.strerror or exc}",
            "free some space, or point HF_HUB_CACHE (or HF_HOME) at a writable folder",
        ) from None


@contextlib.contextmanager
def _client_quiet():
    """The client's tqdm bars only where ours would show, and its retry warnings only with
    SDPACK_VERBOSE: the CLI promises one line on stderr when something fails."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from huggingface_hub.utils import logging as hf_logging

    was_disabled = are_progress_bars_disabled()
    if not progress._enabled():
        disable_progress_bars()
    logger = hf_logging.get_logger("huggingface_hub")
    level = logger.level
    if not os.environ.get("SDPACK_VERBOSE"):
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        if not was_disabled:
            enable_progress_bars()


class HfRemote:
    """One Hub endpoint with the caller's token (``HF_TOKEN`` or the stored login).

    >>> remote = HfRemote("https://huggingface.co")                       # doctest: +SKIP
    >>> remote.publish(release, private=False).commit                      # doctest: +SKIP
    """

    def __init__(self, endpoint: str | None = None, token: str | None = None):
        from huggingface_hub import HfApi, get_token

        from packer import __version__

        self.endpoint = endpoint_of(endpoint)
        self.location = shown(self.endpoint)
        self._token = token or get_token() or False  # False: never fall back to anything implicit
        self.api = HfApi(
            endpoint=self.endpoint,
            token=self._token,
            library_name="sdpack",
            library_version=__version__,
        )

    # -- reading ----------------------------------------------------------------------------------
    def tags(self, repo: str) -> dict[str, str]:
        with hub_errors(self.endpoint, repo, "listing versions"), _client_quiet():
            return {t.name: t.target_commit for t in self.api.list_repo_refs(repo).tags}

    def commit_for(self, repo: str, rev: str) -> str | None:
        """A tag -> its commit; a commit sha is already exact (checked when it is read)."""
        return rev if COMMIT.match(rev) else self.tags(repo).get(rev)

    def commit_dates(self, repo: str, commits: set[str]) -> dict[str, str]:
        """``commit -> ISO 8601 date`` from the history of ``main`` (one paginated listing), and of
        each commit that is not on it."""
        with hub_errors(self.endpoint, repo, "listing commits"), _client_quiet():
            dates = {
                c.commit_id: c.created_at.isoformat() for c in self.api.list_repo_commits(repo)
            }
            for commit in sorted(commits - set(dates)):
                history = self.api.list_repo_commits(repo, revision=commit)
                if history:
                    dates[commit] = history[0].created_at.isoformat()
        return {c: dates[c] for c in commits if c in dates}

    def read(self, repo: str, commit: str, path: str) -> bytes:
        """A small file of ``commit`` through the client's cache; a cached copy whose content does
        not match its blob name (sha256 or git blob id) is deleted and downloaded again."""
        from huggingface_hub import hf_hub_download

        from packer.hub import hf_cache

        with cache_errors(), hub_errors(self.endpoint, repo, f"reading {path}"), _client_quiet():
            for force in (False, True):
                local = Path(
                    hf_hub_download(
                        repo,
                        path,
                        revision=commit,
                        endpoint=self.endpoint,
                        token=self._token,
                        force_download=force,
                    )
                )
                if hf_cache.matches_name(local.resolve()):
                    return local.read_bytes()
                hf_cache.forget(local)
        raise HubError(
            f"{repo}: {path} from {self.location} does not match its own hash", "try again later"
        )

    def download(
        self, repo: str, commit: str, files: list[dict], dest: Path, on_bytes=None
    ) -> Fetched:
        """``files`` (manifest entries) of ``commit`` into ``dest``: fetched into the Hugging Face
        cache (resuming cut-off files, verifying cached ones), then linked or copied."""
        from huggingface_hub.utils import build_hf_headers

        from packer import __version__
        from packer.hub.hf_cache import CommitFiles, link_or_copy

        headers = build_hf_headers(
            token=self._token, library_name="sdpack", library_version=__version__
        )
        with cache_errors(), hub_errors(self.endpoint, repo, "downloading"), _client_quiet():
            fetched = CommitFiles(repo, commit, self.endpoint, headers, self.location).fetch(
                files, on_bytes
            )
        try:
            for path, blob in fetched.blobs.items():
                link_or_copy(blob, Path(dest) / path)
        except OSError as exc:
            raise HubError(
                f"cannot write to {dest.parent}: {exc.strerror or exc}",
                "free some space or choose another --out",
            ) from None
        return fetched

    def url(self, repo: str, commit: str, path: str) -> str:
        return f"{self.location}/{repo}/resolve/{commit}/{path}"

    # -- publishing -----------------------------------------------------------------------------------
    def _existing(self, release: Release, tags: dict[str, str]) -> Published | None:
        commit = tags.get(release.tag)
        if commit is None:
            return None
        check_same(
            release,
            canonical.sha256_bytes(self.read(release.repo, commit, MANIFEST_NAME)),
            self.location,
        )
        return Published(
            release.repo, release.version, commit, release.manifest_sha256, self.location, [], True
        )

    def _remote_files(self, repo: str, head: str) -> dict[str, str]:
        """``path -> sha256`` for LFS files, ``path -> git oid`` for the others, at ``head``."""
        from huggingface_hub.hf_api import RepoFile

        tree = self.api.list_repo_tree(repo, revision=head, recursive=True)
        return {
            f.path: (f.lfs.sha256 if f.lfs else f.blob_id) for f in tree if isinstance(f, RepoFile)
        }

    def publish(self, release: Release, *, private: bool = False) -> Published:
        """Create the repo if needed, commit every file of the release at once, tag the commit."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        repo = release.repo
        with (
            hub_errors(self.endpoint, repo, f"publishing {repo} {release.version}"),
            _client_quiet(),
        ):
            self.validate_card(release.card_text())
            self.api.create_repo(repo, private=private, exist_ok=True)
            refs = self.api.list_repo_refs(repo)
            if (
                done := self._existing(release, {t.name: t.target_commit for t in refs.tags})
            ) is not None:
                return done
            head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
            remote = self._remote_files(repo, head) if head else {}
            ops = [
                CommitOperationAdd(p, str(c) if isinstance(c, Path) else c)
                for p, c in sorted(release.files.items())
            ]
            ops += [
                CommitOperationDelete(p) for p in sorted(set(remote) - set(release.files) - KEEP)
            ]
            info = self.api.create_commit(
                repo,
                ops,
                commit_message=f"sdpack {release.version}",
                parent_commit=head,
                revision="main",
            )
            if not self._tag(release, info.oid):
                return self._existing(
                    release, self.tags(repo)
                )  # tagged meanwhile by another publish
        changed = [p for p in sorted(release.files) if not _same(release, p, remote.get(p))]
        return Published(
            repo, release.version, info.oid, release.manifest_sha256, self.location, changed, False
        )

    def validate_card(self, text: str) -> None:
        """The Hub's own check of a model card (``POST /api/validate-yaml``, what
        ``ModelCard.validate`` sends), here against this remote's endpoint: a card the Hub
        refuses fails before anything is created or uploaded."""
        from huggingface_hub.utils import get_session, hf_raise_for_status

        response = get_session().post(
            f"{self.endpoint}/api/validate-yaml",
            json={"repoType": "model", "content": text},
            headers={"Accept": "application/json"},
        )
        if response.status_code == 400:
            try:
                errors = [str(e.get("message", e)) for e in response.json().get("errors", [])]
            except (ValueError, AttributeError):
                errors = [response.text]
            raise HubError(
                f"{self.location} refused the model card's metadata: {'; '.join(errors)[:300]}",
                card.HINT,
            )
        hf_raise_for_status(response)

    def _tag(self, release: Release, commit: str) -> bool:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            self.api.create_tag(
                release.repo,
                tag=release.tag,
                revision=commit,
                tag_message=f"sdpack {release.version}",
            )
            return True
        except HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) == 409:
                return False
            raise


def _same(release: Release, path: str, remote_oid: str | None) -> bool:
    """Whether a file is already on the Hub as is (sha256 for LFS files, git oid for the others)."""
    if remote_oid is None:
        return False
    content = release.files[path]
    if path in release.known_sha256 and remote_oid == release.known_sha256[path]:
        return True
    if isinstance(content, Path) and content.stat().st_size >= LARGE:
        return canonical.sha256_file(content) == remote_oid
    data = content.read_bytes() if isinstance(content, Path) else content
    git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return remote_oid in (git_oid, canonical.sha256_bytes(data))
