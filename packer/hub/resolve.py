"""Pins: turn ``ORG/NAME@VERSION`` into the exact commit and manifest it names, and pull it.

A version tag is resolved to its commit once; everything after that (downloads, lock records,
the URL a web page fetches) uses the commit sha, so a later change on the Hub cannot swap the
bytes under a pin. ``pull`` verifies every file before the bundle appears at ``out``, and leaves
the pin beside the bundle's files as a lock record (:data:`packer.hub.lock.BUNDLE_LOCK`).

>>> r = resolve("sdpack/tiny-sd@1.0.0")                       # doctest: +SKIP
>>> r.manifest_url
'https://huggingface.co/sdpack/tiny-sd/resolve/3f2a…/manifest.json'
>>> pull("sdpack/tiny-sd@1.0.0", Path("tiny-sd"))             # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from packer.bundle import Bundle
from packer.bundle import manifest as manifest_mod
from packer.bundle.manifest import MANIFEST_NAME
from packer.errors import HubError, UsageError
from packer.hub import lock
from packer.hub.hf import HfRemote
from packer.hub.local import LocalHub
from packer.support.names import Pin, check_repo_id, check_version, parse_pin, tag_name
from packer.support import canonical

__all__ = ["Pin", "Resolved", "check_repo_id", "check_version", "parse_pin", "pull", "remote_for", "resolve", "target"]


def remote_for(endpoint: str | Path | None):
    """An http(s) URL (or nothing: HF_ENDPOINT / the Hub) -> HfRemote; a directory -> LocalHub."""
    if endpoint is None or str(endpoint).startswith(("http://", "https://")):
        return HfRemote(str(endpoint) if endpoint else None)
    path = Path(endpoint)
    if not path.is_dir():
        raise UsageError(f"{endpoint}: neither an http(s) URL nor a hub directory", "pass --endpoint URL or a directory hub")
    return LocalHub(path)


@dataclass
class Resolved:
    repo: str
    version: str
    commit: str
    manifest_url: str
    manifest_sha256: str
    endpoint: str

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "endpoint"}

    def lock(self) -> dict:
        return lock.make(self.repo, self.version, self.commit, self.manifest_sha256, self.endpoint)


def _resolve(pin: Pin, remote) -> tuple[Resolved, dict]:
    rev = tag_name(pin.version) if pin.version else pin.commit
    commit = remote.commit_for(pin.repo, rev)
    if commit is None:
        versions = ", ".join(sorted(t[1:] for t in remote.tags(pin.repo) if t.startswith("v"))) or "none yet"
        raise HubError(f"{pin} is not published at {remote.location}", f"published versions: {versions}")
    data = remote.read(pin.repo, commit, MANIFEST_NAME)
    doc = manifest_mod.parse(data, where=f"{pin.repo}@{commit[:12]} {MANIFEST_NAME}")
    model = doc["model"]
    if model["id"] != pin.repo or (pin.version and model["version"] != pin.version):
        raise HubError(
            f"{pin} resolves to a manifest for {model['id']} {model['version']}", "the repository does not hold what its tag says"
        )
    url = remote.url(pin.repo, commit, MANIFEST_NAME)
    return Resolved(pin.repo, model["version"], commit, url, canonical.sha256_bytes(data), remote.location), doc


def resolve(spec: str | Path | Pin, endpoint: str | Path | None = None) -> Resolved:
    """``ORG/NAME@VERSION``, ``ORG/NAME@<sha>`` or a lock file -> repo, version, commit, manifest URL, sha256.

    A lock file is re-checked: its commit must still hold a manifest with the locked sha256.
    """
    pin, expect_sha, endpoint = (spec, None, endpoint) if isinstance(spec, Pin) else target(spec, endpoint)
    resolved = _resolve(pin, remote_for(endpoint))[0]
    _check_lock(pin, resolved, expect_sha)
    return resolved


def _check_lock(pin: Pin, resolved: Resolved, expect_sha: str | None) -> None:
    if expect_sha is not None and resolved.manifest_sha256 != expect_sha:
        raise HubError(f"{pin}: manifest.json differs from the lock record", "the hub no longer serves the locked bytes")


@dataclass
class Pulled:
    resolved: Resolved
    out: Path
    files: int
    bytes: int


def target(spec: str | Path, endpoint) -> tuple[Pin, str | None, str | Path | None]:
    """A pin, or a lock file (its commit and manifest hash are then enforced)."""
    if lock.looks_like_lock(str(spec)):
        record = lock.read(Path(spec))
        return Pin(record["repo"], commit=record["commit"]), record["manifest_sha256"], endpoint or record["endpoint"]
    return parse_pin(str(spec)), None, endpoint


def pull(spec: str | Path, out: Path, endpoint: str | Path | None = None) -> Pulled:
    """Download a pinned bundle into ``out`` (which must not exist), verified before it appears."""
    pin, expect_sha, endpoint = target(spec, endpoint)
    out = Path(out)
    if out.exists():
        raise UsageError(f"{out} already exists", "choose another --out or remove it")
    remote = remote_for(endpoint)
    resolved, doc = _resolve(pin, remote)
    _check_lock(pin, resolved, expect_sha)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        stage.chmod(0o755)
    except OSError as exc:
        raise UsageError(f"cannot write to {out.parent}: {exc.strerror}", "choose a writable --out") from None
    try:
        remote.download(pin.repo, resolved.commit, [MANIFEST_NAME] + [f["path"] for f in doc["files"]], stage)
        if canonical.sha256_file(stage / MANIFEST_NAME) != resolved.manifest_sha256:
            raise HubError(f"{pin}: manifest.json changed during the download", "pull again")
        bundle = Bundle.open(stage)
        bundle.verify()
        lock.write(stage / lock.BUNDLE_LOCK, resolved.lock())  # the commit, for packer generate
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Pulled(resolved, out, len(bundle.files), sum(f["size"] for f in doc["files"]))
