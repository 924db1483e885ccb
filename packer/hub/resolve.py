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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packer.bundle import Bundle
from packer.bundle import manifest as manifest_mod
from packer.bundle.manifest import MANIFEST_NAME
from packer.errors import HubError, UsageError
from packer.hub import lock
from packer.hub.hf import HfRemote
from packer.hub.local import LocalHub
from packer.support import canonical, progress
from packer.support.names import Pin, check_repo_id, check_version, parse_pin, tag_name

__all__ = [
    "HF",
    "Pin",
    "Pulled",
    "Resolved",
    "check_repo_id",
    "check_version",
    "parse_pin",
    "pull",
    "remote_for",
    "resolve",
    "target",
]


HF = "hf"  # the hub named by HF_ENDPOINT, else huggingface.co


def publish_destination(hub: str) -> tuple[str | Path, str | None]:
    """``--hub`` as publish takes it (``to``, ``endpoint``): ("hf", None) for the Hub (HF_ENDPOINT),
    ("hf", URL) for another Hub-protocol server, (directory, None) for a directory hub."""
    if hub.startswith(("http://", "https://")):
        return HF, hub
    return (HF, None) if hub == HF else (Path(hub), None)


def remote_for(hub: str | Path | None):
    """``hf`` or nothing (HF_ENDPOINT / the Hub) or an http(s) URL -> HfRemote; a directory -> LocalHub."""
    if hub is None or str(hub) == HF:
        return HfRemote(None)
    if str(hub).startswith(("http://", "https://")):
        return HfRemote(str(hub))
    path = Path(hub)
    if not path.is_dir():
        raise UsageError(
            f"{hub}: neither an http(s) URL nor a hub directory",
            "pass --hub hf, --hub URL or --hub DIR",
        )
    return LocalHub(path)


@dataclass
class Resolved:
    repo: str
    version: str
    commit: str
    manifest_url: str
    manifest_sha256: str
    endpoint: str
    serve: str | None = None  # for a directory hub: the command that makes manifest_url load

    def as_dict(self) -> dict:
        doc = {k: v for k, v in asdict(self).items() if k not in ("endpoint", "serve")}
        doc["hub"] = self.endpoint
        if self.serve:
            doc["serve"] = self.serve
        return doc

    def lock(self) -> dict:
        return lock.make(self.repo, self.version, self.commit, self.manifest_sha256, self.endpoint)


def _resolve(pin: Pin, remote) -> tuple[Resolved, dict, bytes]:
    rev = tag_name(pin.version) if pin.version else pin.commit
    commit = remote.commit_for(pin.repo, rev)
    if commit is None:
        versions = (
            ", ".join(sorted(t[1:] for t in remote.tags(pin.repo) if t.startswith("v")))
            or "none yet"
        )
        raise HubError(
            f"{pin} is not published at {remote.location}", f"published versions: {versions}"
        )
    data = remote.read(pin.repo, commit, MANIFEST_NAME)
    doc = manifest_mod.parse(data, where=f"{pin.repo}@{commit[:12]} {MANIFEST_NAME}")
    model = doc["model"]
    if model["id"] != pin.repo or (pin.version and model["version"] != pin.version):
        raise HubError(
            f"{pin} resolves to a manifest for {model['id']} {model['version']}",
            "the repository does not hold what its tag says",
        )
    url = remote.url(pin.repo, commit, MANIFEST_NAME)
    serve = remote.serve_command() if isinstance(remote, LocalHub) else None
    resolved = Resolved(
        pin.repo,
        model["version"],
        commit,
        url,
        canonical.sha256_bytes(data),
        remote.location,
        serve,
    )
    return resolved, doc, data


def resolve(spec: str | Path | Pin, endpoint: str | Path | None = None) -> Resolved:
    """``ORG/NAME@VERSION``, ``ORG/NAME@<sha>`` or a lock file -> repo, version, commit, manifest URL, sha256.

    A lock file is re-checked: its commit must still hold a manifest with the locked sha256.
    """
    pin, expect_sha, endpoint = (
        (spec, None, endpoint) if isinstance(spec, Pin) else target(spec, endpoint)
    )
    resolved = _resolve(pin, remote_for(endpoint))[0]
    _check_lock(pin, resolved, expect_sha)
    return resolved


def _check_lock(pin: Pin, resolved: Resolved, expect_sha: str | None) -> None:
    if expect_sha is not None and resolved.manifest_sha256 != expect_sha:
        raise HubError(
            f"{pin}: manifest.json differs from the lock record",
            "the hub no longer serves the locked bytes",
        )


@dataclass
class Pulled:
    resolved: Resolved
    out: Path
    files: int
    bytes: int
    downloaded: int = 0  # bytes that came over the network (or out of a directory hub)
    reused: int = 0  # files taken from the Hugging Face cache, verified
    repaired: list[str] = field(
        default_factory=list
    )  # cached files that failed verification and were fetched again


def target(spec: str | Path, endpoint) -> tuple[Pin, str | None, str | Path | None]:
    """A pin, or a lock file (its commit and manifest hash are then enforced)."""
    if lock.looks_like_lock(str(spec)):
        record = lock.read(Path(spec))
        return (
            Pin(record["repo"], commit=record["commit"]),
            record["manifest_sha256"],
            endpoint or record["endpoint"],
        )
    return parse_pin(str(spec)), None, endpoint


def _stage_for(out: Path) -> Path:
    """An empty folder beside ``out`` (same filesystem: one rename publishes it)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        stage.chmod(0o755)
    except OSError as exc:
        raise UsageError(
            f"cannot write to {out.parent}: {exc.strerror}", "choose a writable --out"
        ) from None
    return stage


def pull(spec: str | Path, out: Path, endpoint: str | Path | None = None) -> Pulled:
    """Download a pinned bundle into ``out`` (which must not exist), verified before it appears.

    From a Hub the files go through the Hugging Face cache (:mod:`packer.hub.hf_cache`): a cut-off
    pull resumes where it stopped, and a second pull of the same files downloads nothing.
    """
    pin, expect_sha, endpoint = target(spec, endpoint)
    out = Path(out)
    if out.exists():
        raise UsageError(f"{out} already exists", "choose another --out or remove it")
    remote = remote_for(endpoint)
    resolved, doc, manifest_bytes = _resolve(pin, remote)
    _check_lock(pin, resolved, expect_sha)
    total = sum(f["size"] for f in doc["files"])
    stage = _stage_for(out)
    try:
        with progress.task(f"pull {pin.repo}", total, bytes_=True) as bar:
            fetched = remote.download(
                pin.repo, resolved.commit, doc["files"], stage, on_bytes=bar.advance
            )
        (stage / MANIFEST_NAME).write_bytes(manifest_bytes)
        bundle = Bundle.open(stage)
        with progress.task("verify", total, bytes_=True) as bar:
            bundle.verify(on_file=lambda entry: bar.advance(entry["size"]))
        lock.write(stage / lock.BUNDLE_LOCK, resolved.lock())  # the commit, for packer generate
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Pulled(
        resolved,
        out,
        len(bundle.files),
        total,
        fetched.downloaded,
        fetched.reused,
        fetched.repaired,
    )
