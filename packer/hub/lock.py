"""Lock records (manifests/lock.schema.json): a pin written down so that pulling it later, on
another machine, gets the very same bytes — the commit and the manifest's sha256, not a tag.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jsonschema

from packer.errors import UsageError
from packer.support import canonical
from packer.support.schemas import schema

SCHEMA = "lock.schema.json"
BUNDLE_LOCK = "sdpack.lock.json"
"""The lock record ``packer pull`` leaves in the bundle folder it writes: what was pulled (the
commit above all), for ``packer generate`` to record in its images. It is not one of the
bundle's files (the manifest does not list it; verify and publish ignore it)."""


def make(repo: str, version: str, commit: str, manifest_sha256: str, endpoint: str) -> dict:
    record = {
        "lock_version": 1,
        "repo": repo,
        "version": version,
        "commit": commit,
        "manifest_sha256": manifest_sha256,
        "endpoint": endpoint,
    }
    return validate(record)


def validate(record, where: str = "lock record") -> dict:
    """Check ``record`` against the schema; a bad one is the user's input, hence UsageError."""
    validator = jsonschema.Draft202012Validator(schema(SCHEMA))
    error = jsonschema.exceptions.best_match(validator.iter_errors(record))
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise UsageError(
            f"{where}: not a valid lock record ({at}: {error.message[:120]})",
            "write it with `packer resolve --lock-out`",
        )
    return record


def write(path: Path, record: dict) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a lock file."""
    path = Path(path)
    data = canonical.dumps(validate(record))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(
            f"cannot write lock file {path}: {exc.strerror}", "choose a writable --lock-out"
        ) from None
    return path


def read(path: Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(
            f"cannot read lock file {path}: {exc.strerror}",
            "write it with `packer resolve --lock-out`",
        ) from None
    except (
        UnicodeDecodeError,
        json.JSONDecodeError,
        RecursionError,
    ):  # RecursionError: nesting bomb
        raise UsageError(f"{path}: not JSON", "write it with `packer resolve --lock-out`") from None
    return validate(doc, where=str(path))


def looks_like_lock(arg: str) -> bool:
    """`packer pull` takes a pin or a lock file: an existing file or a name ending in .json."""
    return Path(arg).is_file() or arg.endswith(".json")
