"""`packer publish ORG/NAME --bundle DIR --version X.Y.Z [--private] [--hub hf|URL|DIR]`.

Publishes a packed bundle as an immutable version: the Hugging Face Hub (default) or a directory
hub. The bundle is verified first, and must say in its manifest that it is ORG/NAME X.Y.Z, so a
version's name and its content can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packer.bundle import Bundle
from packer.errors import UsageError
from packer.hub import card
from packer.hub import release as release_mod
from packer.hub.release import Published
from packer.support import progress
from packer.support.names import check_repo_id, check_version

LOCAL_CARD_URL = "http://127.0.0.1:8000"  # where `packer serve DIR` answers by default


@dataclass
class PublishArgs:
    bundle: Path
    repo: str
    version: str
    private: bool = False
    to: str | Path = "hf"
    endpoint: str | None = None

    def display(self) -> str:
        where = "the Hugging Face Hub" + (f" at {self.endpoint}" if self.endpoint else "") if self.to == "hf" else f"directory hub {self.to}"
        return f"publish {self.bundle} as {self.repo} {self.version} ({'private' if self.private else 'public'}) to {where}"


@dataclass
class PublishResult:
    published: Published
    files: int

    def display(self) -> str:
        p = self.published
        if p.already:
            head = f"ok: {p.repo} {p.version} is already published at {p.location} with this content; nothing to do"
        else:
            head = f"published {p.repo} {p.version} to {p.location}: {len(p.uploaded)} of {self.files} files new or changed"
        return f"{head}\npin: {p.repo}@{p.version} -> commit {p.commit} (manifest sha256 {p.manifest_sha256})"

    def as_json(self) -> dict:
        p = self.published
        return {"command": "publish", "repo": p.repo, "version": p.version, "commit": p.commit,
                "manifest_sha256": p.manifest_sha256, "hub": p.location, "already": p.already,
                "uploaded": sorted(p.uploaded), "files": self.files}


def _check_bundle(bundle: Bundle, repo: str, version: str) -> None:
    model = bundle.manifest["model"]
    if (model["id"], model["version"]) != (repo, version):
        raise UsageError(
            f"{bundle.root} is {model['id']} {model['version']}, not {repo} {version}",
            "publish it under the name and version in its manifest, or pack it again with those",
        )


def publish_bundle(
    bundle_dir: Path,
    repo_id: str,
    version: str,
    private: bool = False,
    to: str | Path = "hf",
    endpoint: str | None = None,
) -> PublishResult:
    """Verify ``bundle_dir`` and publish it as ``repo_id`` ``version``; republishing it is a no-op."""
    args = PublishArgs(Path(bundle_dir), check_repo_id(repo_id), check_version(version), private, to, endpoint)
    bundle = Bundle.open(args.bundle)
    _check_bundle(bundle, args.repo, args.version)
    bundle.verify()
    progress.status(args.display())
    if str(to) == "hf":
        from packer.hub.hf import HfRemote

        remote = HfRemote(endpoint)
        release = release_mod.from_bundle(bundle, remote.location)
        published = remote.publish(release, private=private)
    else:
        from packer.hub.local import LocalHub

        if private:
            raise UsageError("--private applies to the Hugging Face Hub only", "a directory hub is as private as its folder")
        release = release_mod.from_bundle(bundle, LOCAL_CARD_URL)
        card.check(release.card_text())  # what the Hub's validate-yaml would refuse, refused here too
        published = LocalHub(Path(to)).publish(release)
    return PublishResult(published, len(release.files))


def publish_checkpoint(
    repo_id: str,
    version: str,
    *,
    pack_args=None,
    bundle: Path | None = None,
    private: bool = False,
    to: str | Path = "hf",
    endpoint: str | None = None,
) -> PublishResult:
    """`packer publish`: pack ``pack_args.checkpoint`` as ``repo_id`` ``version`` (libraries come
    from the compile cache when the architecture was built before), then publish the bundle.
    A given ``bundle`` is published as it is. The packed bundle lives in a temporary folder that is
    removed afterwards, whatever happens."""
    import tempfile

    from packer.interface.pack import pack

    check_repo_id(repo_id)
    check_version(version)
    if bundle is not None:
        return publish_bundle(bundle, repo_id, version, private, to, endpoint)
    with tempfile.TemporaryDirectory(prefix="sdpack-publish-") as tmp:
        pack_args.out = Path(tmp) / "bundle"
        pack_args.model_id, pack_args.version = repo_id, version.removeprefix("v")
        pack(pack_args)
        return publish_bundle(pack_args.out, repo_id, pack_args.version, private, to, endpoint)
