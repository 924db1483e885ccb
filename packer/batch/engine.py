"""Run a catalogue's jobs on Ray: probe every job, compile each library once, then the rest.

1. **Probe** (one small task per job): the job's library keys, one per component, and whether
   its version is already published (:mod:`.probe`). Published versions are skipped (a rerun
   finishes only what is left); a checkpoint that fails its probe fails its job with ingest's
   one-line error.
2. **Leaders**: a job needing a library no finished job built packs and publishes while no other
   running job builds any of its libraries: it compiles them into the compile cache (written
   atomically, so concurrent readers never see half an entry). If it fails, its libraries are
   not counted as built and the next job needing them leads.
3. **Followers**: a job whose libraries are all built runs at once; every library is a cache
   hit, so it costs weight I/O and upload only.

Every job is a Ray task declaring ``num_cpus=1`` and ``memory`` (:mod:`.memory`), spread over the
nodes (Ray's ``SPREAD`` strategy: each job reads gigabytes, so the disks and NICs share them); Ray retries a
task whose worker process died (``max_retries``), and since a job publishes in one commit tagged
after it landed, a retried job either finds its version published or publishes it whole.

Workers see the driver's compile cache (``SDPACK_CACHE``, forwarded as an absolute path) and hub
settings (``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HOME``…) through the run's Ray runtime environment.
On a cluster the cache directory must be on a filesystem every node mounts for "compile once" to
hold across nodes (``--cache``); otherwise each node compiles an architecture once for itself.

Fault injection for tests: when ``SDPACK_BATCH_KILL_ONCE`` names a file holding ``ORG/NAME@VERSION``,
the worker packing that job deletes the file and kills its own process after packing, before
publishing: Ray must retry the job, and nothing of the first attempt may be visible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packer.batch import memory, probe
from packer.batch.jobs import Job
from packer.errors import SdpackError, UsageError
from packer.support import canonical
from packer.support.native_log import verbose

RETRIES = 3  # attempts after a worker dies (out of memory, a lost node), per job
KILL_ONCE = "SDPACK_BATCH_KILL_ONCE"
FORWARDED = (
    "SDPACK_WEBGPU_RUNTIME_CACHE",
    "SDPACK_VERBOSE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_DISABLE_XET",
    "HF_HUB_OFFLINE",
    KILL_ONCE,
)
OBJECT_STORE_BYTES = (
    256 << 20
)  # local runs pass only small results through it: leave memory to packs
RAY_HINT = "install it with: pip install 'sdpack[batch]'"
CLUSTER_HINT = "start one with `ray start --head`, then pass the HOST:PORT it prints as --address"
CONNECT_SECONDS = 5


@dataclass
class JobResult:
    """What happened to one job. ``status``: published | already (skipped: the version exists) | failed."""

    job: Job
    status: str
    commit: str | None = None
    manifest_sha256: str | None = None
    error: str | None = None
    compiled: int = 0
    reused: int = 0
    seconds: float = 0.0
    leader: bool = False  # it compiled libraries no earlier job of the run had built
    node: str | None = None  # the Ray node that ran it

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def as_json(self) -> dict:
        out = {
            "repo": self.job.repo,
            "version": self.job.version,
            "checkpoint": self.job.checkpoint,
            "status": self.status,
            "libraries": {"compiled": self.compiled, "reused": self.reused},
            "seconds": round(self.seconds, 3),
        }
        out.update(
            {
                k: v
                for k, v in (
                    ("commit", self.commit),
                    ("manifest_sha256", self.manifest_sha256),
                    ("error", self.error),
                    ("node", self.node),
                )
                if v is not None
            }
        )
        return out


# -- the tasks (module-level: Ray workers import them by name) --------------------------------------
def _failed(job: Job, exc: BaseException) -> JobResult:
    if isinstance(exc, SdpackError):
        return JobResult(job, "failed", error=exc.one_line())
    if isinstance(exc, MemoryError):
        return JobResult(
            job,
            "failed",
            error="out of memory (raise the node's memory or run fewer jobs per node)",
        )
    text = " ".join(str(exc).split())[:300]
    return JobResult(
        job, "failed", error=f"internal error: {type(exc).__name__}: {text} (report it as a bug)"
    )


def probe_job(job: Job, hub: str) -> tuple[str, str | None, JobResult | None]:
    """``("published", commit, result)``, ``("todo", library keys, None)`` or ``("failed", None, result)``."""
    os.environ["SDPACK_NO_PROGRESS"] = "1"
    try:
        commit = probe.published_commit(hub, job)
        if commit is not None:
            return "published", commit, JobResult(job, "already", commit=commit)
        return "todo", probe.library_keys(job), None
    except BaseException as exc:  # noqa: BLE001 - every failure is this job's, as one line
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return "failed", None, _failed(job, exc)


def work_dir(run: str, job: Job) -> Path:
    """Where ``job`` packs on its node: the same folder for every attempt of the job in one run, so
    an attempt first removes what a killed one left (a bundle of gigabytes)."""
    return (
        Path(tempfile.gettempdir())
        / "sdpack-batch"
        / f"{run}-{canonical.sha256_bytes(job.name.encode())[:16]}"
    )


def publish_job(job: Job, hub: str, leader: bool, run: str) -> JobResult:
    """Pack ``job`` into its work folder and publish it: `packer publish --checkpoint`, as one task."""
    from packer.hub.resolve import publish_destination
    from packer.interface.pack import pack
    from packer.interface.publish import PublishArgs, publish

    os.environ["SDPACK_NO_PROGRESS"] = "1"
    start = time.monotonic()
    to, endpoint = publish_destination(hub)
    work = work_dir(run, job)
    try:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            args = job.pack_args()
            args.out = work / "bundle"
            packed = pack(args)
            _kill_once(job)
            done = publish(
                PublishArgs(args.out, job.repo, job.version, job.private, to, endpoint).checked()
            ).published
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        result = _failed(job, exc)
    else:
        result = JobResult(
            job,
            "already" if done.already else "published",
            commit=done.commit,
            manifest_sha256=done.manifest_sha256,
            compiled=packed.compiled,
            reused=packed.reused,
        )
    import ray

    result.seconds, result.leader = time.monotonic() - start, leader
    result.node = ray.get_runtime_context().get_node_id()
    return result


def _kill_once(job: Job) -> None:
    marker = os.environ.get(KILL_ONCE)
    if not marker:
        return
    try:
        if Path(marker).read_text().strip() != job.name:
            return
        os.unlink(marker)
    except OSError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


# -- the driver -------------------------------------------------------------------------------------
def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("publish-batch needs Ray, which is not installed", RAY_HINT) from None
    return ray


def _runtime_env(cache: Path) -> dict:
    env = {name: os.environ[name] for name in FORWARDED if os.environ.get(name)}
    env["SDPACK_CACHE"] = str(cache.absolute())
    env["SDPACK_NO_PROGRESS"] = "1"
    return {"env_vars": env}


def start(ray, address: str | None, cache: Path) -> None:
    """Ray in this process (no dashboard, worker logs kept off the terminal), or join ``address``."""
    options = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "runtime_env": _runtime_env(cache),
    }
    try:
        if address is None:
            ray.init(
                num_cpus=os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES, **options
            )
        else:
            _check_reachable(address)  # Ray itself retries an unreachable address for minutes
            options.pop("include_dashboard")
            ray.init(address=address, **options)
    except ConnectionError as exc:
        raise UsageError(
            f"cannot reach the Ray cluster at {address}: {' '.join(str(exc).split())[:200]}",
            CLUSTER_HINT,
        ) from None


def _check_reachable(address: str) -> None:
    """``HOST:PORT`` (or ``ray://HOST:PORT``) must accept a TCP connection; ``auto`` is Ray's to find."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except (OSError, ValueError):
        raise UsageError(f"cannot reach the Ray cluster at {address}", CLUSTER_HINT) from None


def _largest_node_memory(ray) -> int:
    return max(
        (int(n["Resources"].get("memory", 0)) for n in ray.nodes() if n.get("Alive")), default=0
    )


def run_batch(
    jobs: list[Job],
    *,
    hub: str = "hf",
    address: str | None = None,
    cache: Path | None = None,
    retries: int = RETRIES,
    on_result: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Publish every job (see the module docstring); results in the order of ``jobs``."""
    from packer.compile.cache import cache_root

    ray = _ray()
    # Ray's driver prints the cluster's messages (a worker died, a task is retried) on stdout, which
    # belongs to --json: they go to stderr with SDPACK_VERBOSE=1, else nowhere; results say what happened.
    with (
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(sys.stderr if verbose() else devnull),
    ):
        start(ray, address, cache_root(cache))
        try:
            hub = _hub_directory(hub)
            return _schedule(ray, jobs, hub, retries, on_result or (lambda r: None))
        finally:
            ray.shutdown()


def _hub_directory(hub: str) -> str:
    """A directory hub exists and is named absolutely (workers run elsewhere); other hubs as given."""
    if hub == "hf" or hub.startswith(("http://", "https://")):
        return hub
    try:
        Path(hub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create hub directory {hub}: {exc.strerror or exc}",
            "choose a writable --hub DIR",
        ) from None
    return str(Path(hub).absolute())


def _schedule(ray, jobs, hub, retries, on_result) -> list[JobResult]:
    results: list[JobResult | None] = [None] * len(jobs)
    waiting: dict[int, frozenset[str]] = {}  # job -> its library keys

    def finish(i: int, result: JobResult) -> None:
        results[i] = result
        on_result(result)

    probe_task = ray.remote(num_cpus=1, max_retries=retries)(probe_job)
    probes = ray.get(
        [probe_task.options(name=f"probe {job.name}").remote(job, hub) for job in jobs]
    )
    for i, (state, value, result) in enumerate(probes):
        if state == "todo":
            waiting[i] = frozenset(value)
        else:
            finish(i, result)

    cap = _largest_node_memory(ray)
    task = ray.remote(publish_job)
    run = uuid.uuid4().hex[:12]
    running: dict = {}  # ObjectRef -> (job, keys it builds)
    built: set[str] = set()
    building: set[str] = set()

    def submit(i: int) -> None:
        keys = waiting.pop(i)
        leader = not keys <= built
        need = memory.peak_bytes(jobs[i].checkpoint, compiles=leader)
        options = {
            "name": f"publish {jobs[i].name}",
            "num_cpus": 1,
            "max_retries": retries,
            "memory": min(need, cap) if cap else need,
            "scheduling_strategy": "SPREAD",
        }
        running[task.options(**options).remote(jobs[i], hub, leader, run)] = (i, keys - built)
        building.update(keys - built)

    def dispatch() -> None:
        # Followers (every library built) first, then leaders whose libraries no running job builds.
        for i in [i for i, keys in waiting.items() if keys <= built]:
            submit(i)
        for i in list(waiting):
            if not waiting[i] & building:
                submit(i)

    dispatch()
    while running:
        [ready], _ = ray.wait(list(running), num_returns=1)
        i, keys = running.pop(ready)
        try:
            result = ray.get(ready)
        except ray.exceptions.RayError as exc:
            result = JobResult(
                jobs[i],
                "failed",
                leader=bool(keys),
                error=(
                    f"the worker died {retries + 1} times ({type(exc).__name__}); out of memory or a lost node "
                    "(run fewer jobs per node, or rerun: published versions are skipped)"
                ),
            )
        building.difference_update(keys)
        if result.ok:
            built.update(keys)
        finish(i, result)
        dispatch()
    return [r for r in results if r is not None]
