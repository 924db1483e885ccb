"""`packer publish-batch JOBS [--hub hf|URL|DIR] [--address RAY] [--cache DIR] [--retries N]`.

Publishes every job of a job file (:mod:`packer.batch.jobs`) on Ray (:mod:`packer.batch.engine`):
in this process by default, or on the running cluster at ``--address``. Each job is
`packer publish --checkpoint` with its own options; a job that fails leaves the others running
and is reported with its one-line error; a rerun skips the versions already published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from packer.batch.engine import RETRIES, JobResult, run_batch
from packer.batch.jobs import load_jobs
from packer.errors import UsageError
from packer.support import progress


@dataclass
class PublishBatchArgs:
    jobs: Path
    hub: str = "hf"
    address: str | None = None
    cache: Path | None = None
    retries: int = RETRIES

    def checked(self) -> PublishBatchArgs:
        if not 0 <= self.retries <= 100:
            raise UsageError(
                f"--retries {self.retries} is out of range", f"use 0 to 100 (default {RETRIES})"
            )
        if self.hub != "hf" and not self.hub.startswith(("http://", "https://")):
            self.hub = str(
                Path(self.hub).absolute()
            )  # a directory hub: the same folder for every worker
        return self

    def display(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "Ray on this machine"
        return f"publish the jobs of {self.jobs} to {self.hub} on {where}"


@dataclass
class PublishBatchResult:
    hub: str
    address: str | None
    results: list[JobResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if not r.ok]

    def error_lines(self) -> list[str]:
        """One line per failed job, for stderr."""
        return [f"{r.job.name} ({r.job.checkpoint}): {r.error}" for r in self.failed]

    def display(self) -> str:
        lines = []
        for r in self.results:
            detail = f"commit {r.commit}" if r.commit else r.error
            libs = (
                f", libraries {r.compiled} compiled / {r.reused} reused"
                if r.compiled or r.reused
                else ""
            )
            lines.append(f"{r.status:9} {r.job.name}: {detail}{libs}")
        lines.append(
            f"{len(self.results)} jobs: {self.count('published')} published, {self.count('already')} "
            f"already published, {len(self.failed)} failed; {self.compiled} libraries compiled"
        )
        return "\n".join(lines)

    @property
    def compiled(self) -> int:
        return sum(r.compiled for r in self.results)

    def as_json(self) -> dict:
        return {
            "command": "publish-batch",
            "hub": self.hub,
            "ray": self.address or "local",
            "jobs": len(self.results),
            "published": self.count("published"),
            "already": self.count("already"),
            "failed": len(self.failed),
            "libraries": {"compiled": self.compiled, "reused": sum(r.reused for r in self.results)},
            "results": [r.as_json() for r in self.results],
        }


def publish_batch(args: PublishBatchArgs) -> PublishBatchResult:
    """Run every job of ``args.jobs``; the result says what happened to each."""
    args.checked()
    jobs = load_jobs(args.jobs)
    progress.status(args.display())

    def report(result: JobResult) -> None:
        progress.status(
            f"{result.status} {result.job.name}" + (f": {result.error}" if result.error else "")
        )

    results = run_batch(
        jobs,
        hub=args.hub,
        address=args.address,
        cache=args.cache,
        retries=args.retries,
        on_result=report,
    )
    return PublishBatchResult(args.hub, args.address, results)
