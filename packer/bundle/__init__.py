"""The bundle: the one artifact every stage reads or writes (spec: formats/README.md).

``BundleWriter`` builds a bundle atomically; ``Bundle`` opens one, checks its manifest against
the JSON Schema and path rules, and reads files and weights with every hash verified.
"""

from packer.bundle.reader import Bundle
from packer.bundle.writer import BundleWriter

__all__ = ["Bundle", "BundleWriter"]
