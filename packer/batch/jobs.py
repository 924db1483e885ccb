"""The job file of `packer publish-batch`: JSON Lines (``.jsonl``) or TOML (``.toml``, ``[[job]]``).

Each job is checked against ``formats/batch-job.schema.json`` and the same repo-id, version and
option rules as `packer publish`, before anything runs: a bad line fails the whole run with one
line naming the file and the line (or table), so a typo never publishes half a catalogue.

>>> jobs = load_jobs(Path("catalogue.jsonl"))                           # doctest: +SKIP
>>> jobs[0].repo, jobs[0].version, jobs[0].checkpoint                   # doctest: +SKIP
('my-org/anime', '1.0.0', '/data/anime.safetensors')
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import jsonschema

from packer.bundle.manifest import schema
from packer.errors import UsageError
from packer.support.names import check_repo_id, check_version

SCHEMA = "batch-job.schema.json"
FORMATS = "a .jsonl file (one JSON object per line) or a .toml file ([[job]] tables)"
MAX_JOB_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class Job:
    """One checkpoint to publish as ``repo`` ``version`` (options as `packer publish` takes them)."""

    repo: str
    checkpoint: str
    version: str
    targets: tuple[str, ...] | None = None
    dtype: str | None = None
    tokenizer: str | None = None
    prediction_type: str | None = None
    image_size: int | None = None
    license: str | None = None
    base_model: str | None = None
    private: bool = False

    @property
    def name(self) -> str:
        return f"{self.repo}@{self.version}"

    def pack_args(self):
        """The :class:`packer.interface.pack.PackArgs` `packer publish --checkpoint` would build."""
        from packer.interface.pack import PackArgs

        return PackArgs(
            checkpoint=self.checkpoint,
            out=Path(),
            targets=list(self.targets) if self.targets else None,
            dtype=self.dtype,
            version=self.version,
            model_id=self.repo,
            license=self.license,
            base_model=self.base_model,
            tokenizer=Path(self.tokenizer) if self.tokenizer else None,
            prediction_type=self.prediction_type,
            image_size=self.image_size,
        ).checked()

    def as_dict(self) -> dict:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
            if v not in (None, False)
        }


def _resolve(value: str, base: Path) -> str:
    """A relative local path, relative to the job file's folder; Hub ids stay as they are."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    local = base / path
    return str(local.resolve()) if local.exists() or value.startswith((".", "~")) else value


def _job(doc, where: str, base: Path) -> Job:
    validator = jsonschema.Draft202012Validator(schema(SCHEMA))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(job)"
        raise UsageError(
            f"{where}: {at}: {error.message[:160]}",
            "see formats/batch-job.schema.json for what a job holds",
        )
    try:
        targets = doc.get("targets")
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        job = Job(
            repo=check_repo_id(doc["repo"]),
            checkpoint=_resolve(doc["checkpoint"], base),
            version=check_version(doc["version"]),
            targets=tuple(targets) if targets else None,
            dtype=doc.get("dtype"),
            tokenizer=_resolve(doc["tokenizer"], base) if "tokenizer" in doc else None,
            prediction_type=doc.get("prediction_type"),
            image_size=doc.get("image_size"),
            license=doc.get("license"),
            base_model=doc.get("base_model"),
            private=bool(doc.get("private", False)),
        )
        job.pack_args()  # the option checks `packer publish` makes, before anything runs
    except UsageError as exc:
        raise UsageError(f"{where}: {exc.message}", exc.hint) from None
    return job


def _documents(path: Path, text: str) -> list[tuple[str, object]]:
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(
                f"{path}: not valid TOML ({exc})", "fix the file; each job is a [[job]] table"
            ) from None
        extra = sorted(set(data) - {"job"})
        if extra or not isinstance(data.get("job", []), list):
            raise UsageError(
                f"{path}: unexpected top-level key {(extra or ['job'])[0]!r}",
                "each job is a [[job]] table",
            )
        return [(f"{path} job {i + 1}", doc) for i, doc in enumerate(data.get("job", []))]
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    docs.append((f"{path}:{n}", json.loads(line)))
                except ValueError as exc:
                    raise UsageError(
                        f"{path}:{n}: not a JSON object ({exc})", "write one JSON object per line"
                    ) from None
        return docs
    raise UsageError(
        f"{path}: unknown job file type {path.suffix or '(no extension)'!r}", f"pass {FORMATS}"
    )


def load_jobs(path: Path) -> list[Job]:
    """Every job in ``path``, checked; the same ``repo``/``version`` twice is refused."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JOB_FILE_BYTES:
            raise UsageError(
                f"{path}: larger than {MAX_JOB_FILE_BYTES >> 20} MiB",
                "split the catalogue into several job files",
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read job file {path}: {getattr(exc, 'strerror', None) or exc}",
            f"pass {FORMATS}",
        ) from None
    base = path.resolve().parent
    jobs = [_job(doc, where, base) for where, doc in _documents(path, text)]
    if not jobs:
        raise UsageError(f"{path}: holds no jobs", f"pass {FORMATS}")
    seen: dict[str, int] = {}
    for i, job in enumerate(jobs):
        if job.name in seen:
            raise UsageError(
                f"{path}: {job.name} appears twice (jobs {seen[job.name] + 1} and {i + 1})",
                "a version is published once; give each job its own version",
            )
        seen[job.name] = i
    return jobs
