"""MetaSchedule tuning databases shipped with sdpack, one directory per exact target.

``tuning/<target-key>/database_workload.json`` + ``database_tuning_record.json`` (the plain
JSON-lines files MetaSchedule writes) are applied by ``MetaScheduleApplyDatabase`` when present.
MetaSchedule matches records to kernels by structural hash only and ignores the record's
target (the notes saw llvm records applied to a CUDA build), so :func:`find_database` checks
every record's target against the target being built. Whatever is wrong with a database —
foreign target, unparsable line, missing half — it is skipped with a
:class:`TuningDatabaseWarning` and the build falls back to dlight: a tuning log can make a
build faster, never make it fail.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parent
WORKLOAD = "database_workload.json"
RECORDS = "database_tuning_record.json"
_IGNORED_TARGET_KEYS = ("host", "tag", "num-cores")  # num-cores: the tuning machine's


class TuningDatabaseWarning(UserWarning):
    """A shipped tuning database was not applied; the build used untuned schedules."""


@dataclass(frozen=True)
class TuningDatabase:
    """A validated database for one target; ``sha256`` enters the architecture signature."""

    directory: Path
    sha256: str

    def open(self):
        """The MetaSchedule database (read only: ``allow_missing=False`` never creates files)."""
        from tvm.s_tir import meta_schedule as ms

        from ..schedule_rules import load_tensor_intrinsics

        load_tensor_intrinsics()  # records name the wmma / mma intrinsics

        return ms.database.JSONDatabase(
            str(self.directory / WORKLOAD), str(self.directory / RECORDS), allow_missing=False
        )


def find_database(target_key: str, target_json: dict, root: Path | None = None):
    """The database for ``target_key`` if one ships and every record is for ``target_json``."""
    directory = (root or ROOT) / target_key
    present = [(directory / name).is_file() for name in (WORKLOAD, RECORDS)]
    if not any(present):
        return None
    try:
        if not all(present):
            raise ValueError("one of the two database files is missing")
        _check_records(directory / RECORDS, target_json)
        _check_workloads(directory / WORKLOAD)
    except (OSError, ValueError) as exc:
        skip(directory, str(exc))
        return None
    digest = hashlib.sha256()
    for name in (WORKLOAD, RECORDS):
        digest.update((directory / name).read_bytes())
    return TuningDatabase(directory, digest.hexdigest())


def skip(directory: Path, reason: str) -> None:
    """Warn that the database in ``directory`` is not used, and why."""
    warnings.warn(
        TuningDatabaseWarning(
            f"tuning database {directory} ignored ({reason}); using untuned dlight schedules"
        ),
        stacklevel=3,
    )


def _comparable(target: dict) -> dict:
    return {k: v for k, v in target.items() if k not in _IGNORED_TARGET_KEYS}


def _check_records(path: Path, target_json: dict) -> None:
    want = _comparable(target_json)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError("no tuning records")
    for number, line in enumerate(lines, 1):
        try:
            _, (_, _, target, _) = json.loads(line)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path.name} line {number} is not a tuning record") from exc
        if not isinstance(target, dict) or _comparable(target) != want:
            raise ValueError(f"{path.name} line {number} was tuned for another target")


def _check_workloads(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                _, _ = json.loads(line)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path.name} line {number} is not a workload") from exc
