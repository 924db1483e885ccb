"""`packer publish ORG/NAME --bundle DIR --version X.Y.Z [--private] [--hub hf|URL|DIR]`.

Publishes a packed bundle as an immutable version: the Hugging Face Hub (default) or a directory
hub. The bundle is verified first, and must say in its manifest that it is ORG/NAME X.Y.Z, so a
version's name and its content can never disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from packer.bundle import Bundle
from packer.errors import UsageError
from packer.hub import card
from packer.hub import release as release_mod
from packer.hub.release import Published
from packer.interface.pack import PackArgs
from packer.support import progress
from packer.support.names import check_repo_id, check_version

LOCAL_CARD_URL = "http://127.0.0.1:8000"  # where `packer serve DIR` answers by default


@dataclass
class PublishArgs:
    """What to publish as ``repo`` ``version``: the packed ``bundle``, or ``pack`` (the checkpoint
    to pack first; its ``out``, ``model_id`` and ``version`` are set here). ``to``: "hf" (with
    ``endpoint`` None for the Hugging Face Hub, else that Hub API URL) or a directory hub."""

    bundle: Path | None
    repo: str
    version: str
    private: bool = False
    to: str | Path = "hf"
    endpoint: str | None = None
    pack: PackArgs | None = None

    def checked(self) -> PublishArgs:
        """Validate before any work: one source, a valid repo id and version (``v`` dropped)."""
        if (self.bundle is None) == (self.pack is None):
            raise UsageError(
                "publish needs exactly one of --checkpoint or --bundle",
                "pass --checkpoint FILE to pack and publish it, or --bundle DIR for a packed bundle",
            )
        self.repo, self.version = check_repo_id(self.repo), check_version(self.version)
        if self.bundle is not None:
            self.bundle = Path(self.bundle)
        if str(self.to) != "hf" and self.private:
            raise UsageError(
                "--private applies to the Hugging Face Hub only",
                "a directory hub is as private as its folder",
            )
        return self

    def display(self) -> str:
        where = (
            "the Hugging Face Hub" + (f" at {self.endpoint}" if self.endpoint else "")
            if str(self.to) == "hf"
            else f"directory hub {self.to}"
        )
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
        return {
            "command": "publish",
            "repo": p.repo,
            "version": p.version,
            "commit": p.commit,
            "manifest_sha256": p.manifest_sha256,
            "hub": p.location,
            "already": p.already,
            "uploaded": sorted(p.uploaded),
            "files": self.files,
        }


def _check_bundle(bundle: Bundle, repo: str, version: str) -> None:
    model = bundle.manifest["model"]
    if (model["id"], model["version"]) != (repo, version):
        raise UsageError(
            f"{bundle.root} is {model['id']} {model['version']}, not {repo} {version}",
            "publish it under the name and version in its manifest, or pack it again with those",
        )


def publish(args: PublishArgs) -> PublishResult:
    """Publish ``args.bundle`` (verified first) as ``args.repo`` ``args.version``, or pack
    ``args.pack`` first (libraries come from the compile cache when the architecture was built
    before) into a temporary folder that is removed afterwards, whatever happens. Republishing the
    same content is a no-op."""
    import tempfile

    from packer.interface.pack import pack

    args.checked()
    if args.bundle is not None:
        return _publish_bundle(args)
    with tempfile.TemporaryDirectory(prefix="sdpack-publish-") as tmp:
        args.pack.out = Path(tmp) / "bundle"
        args.pack.model_id, args.pack.version = args.repo, args.version
        pack(args.pack)
        return _publish_bundle(dataclasses.replace(args, bundle=args.pack.out, pack=None))


def _publish_bundle(args: PublishArgs) -> PublishResult:
    bundle = Bundle.open(args.bundle)
    _check_bundle(bundle, args.repo, args.version)
    bundle.verify()
    progress.status(args.display())
    if str(args.to) == "hf":
        from packer.hub.hf import HfRemote

        remote = HfRemote(args.endpoint)
        release = release_mod.from_bundle(bundle, remote.location)
        published = remote.publish(release, private=args.private)
    else:
        from packer.hub.local import LocalHub

        release = release_mod.from_bundle(bundle, LOCAL_CARD_URL)
        card.check(
            release.card_text()
        )  # what the Hub's validate-yaml would refuse, refused here too
        published = LocalHub(Path(args.to)).publish(release)
    return PublishResult(published, len(release.files))
