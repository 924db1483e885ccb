"""The one exception type users see.

Library code raises :class:`SdpackError` (or a subclass) carrying a one-line message that says
what is wrong and a hint that says what to do. Only ``packer.cli`` turns it into an exit code and
one line on stderr; nothing else prints.
"""

from __future__ import annotations


class SdpackError(Exception):
    """A user-facing failure: ``message`` says what is wrong, ``hint`` what to do about it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as a single line (newlines folded)."""
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split())


class BundleError(SdpackError):
    """A bundle fails the formats/ spec: schema, paths, sizes, hashes or encodings."""

    exit_code = 1


class CheckpointError(SdpackError):
    """A checkpoint cannot be ingested: unreadable, unsafe, or not an SD1.5-architecture model."""


class CompileError(SdpackError):
    """The fixed TVM pipeline cannot build a component for a target."""


class HubError(SdpackError):
    """Publishing, resolving or pulling a model failed."""


class UsageError(SdpackError):
    """An argument is malformed (repo id, version, target list, ...)."""
