"""What one published version is: the bundle's files plus its model card, and the result.

Both hubs (hf.py, local.py) publish a :class:`Release` and answer with :class:`Published`, so
the immutability rule (a version's manifest never changes) lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from packer.bundle import Bundle
from packer.bundle.manifest import MANIFEST_NAME
from packer.errors import HubError
from packer.hub import card
from packer.support import canonical
from packer.support.names import tag_name

CARD_NAME = "README.md"


@dataclass
class Release:
    repo: str
    version: str
    files: dict[str, Path | bytes]  # path in the repo -> content
    manifest_sha256: str
    known_sha256: dict[str, str] = field(
        default_factory=dict
    )  # from the manifest: no need to hash again

    @property
    def tag(self) -> str:
        return tag_name(self.version)

    def card_text(self) -> str:
        """README.md as text (the bundle's own or the generated one), for validation."""
        content = self.files[CARD_NAME]
        data = content.read_bytes() if isinstance(content, Path) else content
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise HubError("the bundle's README.md is not UTF-8 text", card.HINT) from None


@dataclass
class Published:
    repo: str
    version: str
    commit: str
    manifest_sha256: str
    location: str  # endpoint URL or hub directory
    uploaded: list[str] = field(default_factory=list)  # files whose bytes had to be sent or written
    already: bool = False  # this exact version was already published: nothing done


def from_bundle(bundle: Bundle, card_base_url: str) -> Release:
    """Every file the manifest lists, manifest.json, and README.md (the bundle's, or generated)."""
    files: dict[str, Path | bytes] = {p: bundle.root / p for p in bundle.files}
    manifest_path = bundle.root / MANIFEST_NAME
    files[MANIFEST_NAME] = manifest_path
    if CARD_NAME not in files:
        own = bundle.root / CARD_NAME
        files[CARD_NAME] = own if own.is_file() else card.render(bundle.manifest, card_base_url)
    model = bundle.manifest["model"]
    known = {f["path"]: f["sha256"] for f in bundle.manifest["files"]}
    return Release(
        model["id"], model["version"], files, canonical.sha256_file(manifest_path), known
    )


def check_same(release: Release, published_sha256: str, location: str) -> None:
    """A version is immutable: the same manifest is a no-op, another one is an error."""
    if published_sha256 != release.manifest_sha256:
        raise HubError(
            f"{release.repo} version {release.version} already published with different content at {location}; bump --version",
            "publish changed content as a new version: published versions never change",
        )
