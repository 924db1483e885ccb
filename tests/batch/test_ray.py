"""`packer publish-batch` through real Ray: in the CLI's own process, then again (a rerun) on a
two-node cluster on loopback (`ray start --head` + `ray start --address`).

One catalogue of the tiny example at two architectures (B differs from A in its text encoder
only, so B shares A's UNet and VAE libraries), in three layouts, plus a pickle that would run
code, a truncated safetensors file and a job whose worker kills itself once (the engine's
``SDPACK_BATCH_KILL_ONCE`` fault point: after packing, before publishing). The compile cache
starts empty, so counting builds proves each library is compiled once per run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest

from packer.hub.local import LocalHub
from tests.helpers import REPO, Result, cli_json

pytestmark = pytest.mark.slow
RAY = [
    sys.executable,
    "-m",
    "ray.scripts.scripts",
]  # the `ray` CLI of the package these tests import
LIBRARIES = 4  # A: text encoder, UNet, VAE (llvm); B: its own text encoder, A's UNet and VAE


class Evil:
    """Unpickling this runs a shell command: a .ckpt ingest must refuse it, never run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def world():
    """Example checkpoints, hostile files, the job file, and an environment for every process:
    its own compile cache, HF home, Ray temp dir (short: Ray's socket paths must fit in 107
    bytes) and Ray auth token (no token file in the user's home)."""
    import examples.make_example as mk

    root = Path(tempfile.mkdtemp(prefix="sdb-"))
    a = mk.make_example(root / "a", seed=0)
    with mock.patch.dict(mk.TEXT_ENCODER, num_hidden_layers=1):
        b = mk.make_example(root / "b", seed=1)
    evil = root / "evil.ckpt"
    import torch

    torch.save({"state_dict": {"x": Evil(root / "pwned")}}, evil)
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(a["safetensors"].read_bytes()[: a["safetensors"].stat().st_size // 2])
    llvm = {"targets": "llvm", "dtype": "fp32"}
    jobs = [
        {
            "repo": "t/a-single",
            "checkpoint": str(a["safetensors"]),
            "version": "1.0.0",
            "tokenizer": str(a["tokenizer"]),
            **llvm,
        },
        {"repo": "t/a-diffusers", "checkpoint": str(a["diffusers"]), "version": "1.0.0", **llvm},
        {
            "repo": "t/a-killed",
            "checkpoint": str(a["safetensors"]),
            "version": "1.0.0",
            "tokenizer": str(a["tokenizer"]),
            **llvm,
        },
        {
            "repo": "t/b-single",
            "checkpoint": str(b["safetensors"]),
            "version": "1.0.0",
            "tokenizer": str(b["tokenizer"]),
            **llvm,
        },
        {
            "repo": "t/b-ckpt",
            "checkpoint": str(b["ckpt"]),
            "version": "2.0.0",
            "tokenizer": str(b["tokenizer"]),
            "image_size": 64,
            **llvm,
        },
        {
            "repo": "t/evil",
            "checkpoint": str(evil),
            "version": "1.0.0",
            "tokenizer": str(a["tokenizer"]),
            **llvm,
        },
        {
            "repo": "t/truncated",
            "checkpoint": str(truncated),
            "version": "1.0.0",
            "tokenizer": str(a["tokenizer"]),
            **llvm,
        },
    ]
    (root / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
    (root / "kill-once").write_text("t/a-killed@1.0.0\n")
    env = {
        "SDPACK_CACHE": str(root / "cache"),
        "HF_HOME": str(root / "hf"),
        "RAY_TMPDIR": str(root / "r"),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "SDPACK_NO_PROGRESS": "1",
        "SDPACK_BATCH_KILL_ONCE": str(root / "kill-once"),
        "PYTHONPATH": str(REPO),
        "RAY_USAGE_STATS_ENABLED": "0",
        "TMPDIR": str(root / "tmp"),
    }
    (root / "r").mkdir()
    (root / "tmp").mkdir()
    yield {"root": root, "a": a, "b": b, "jobs": jobs, "env": env}
    shutil.rmtree(root, ignore_errors=True)


def batch(world, *args, jobs: Path | None = None) -> tuple[Result, dict]:
    env = {**os.environ, **world["env"]}
    for var in ("HF_TOKEN", "HF_ENDPOINT", "RAY_ADDRESS"):
        env.pop(var, None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "packer",
            "publish-batch",
            str(jobs or world["root"] / "jobs.jsonl"),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout, proc.stderr[-3000:]
    doc = cli_json(Result(0, proc.stdout, ""), "publish-batch")
    return result, {r["repo"]: r for r in doc["results"]} | {"": doc}


@pytest.fixture(scope="module")
def first(world):
    hub = world["root"] / "hub"
    start = time.monotonic()
    result, by_repo = batch(world, "--hub", str(hub))
    by_repo[""]["wall"] = time.monotonic() - start
    return result, by_repo, hub


def test_good_jobs_publish_and_each_library_compiles_once(first, world):
    result, by_repo, hub = first
    good = [j["repo"] for j in world["jobs"] if j["repo"] not in ("t/evil", "t/truncated")]
    assert all(by_repo[r]["status"] == "published" for r in good), result.err
    assert by_repo[""]["libraries"]["compiled"] == LIBRARIES, by_repo
    assert len(list((world["root"] / "cache" / "compiled").glob("*.json"))) == LIBRARIES
    assert (
        by_repo["t/b-single"]["libraries"]["compiled"]
        + by_repo["t/b-ckpt"]["libraries"]["compiled"]
        == 1
    )
    local = LocalHub(hub)
    for repo in good:
        version = next(j["version"] for j in world["jobs"] if j["repo"] == repo)
        assert local.tags(repo) == {f"v{version}": by_repo[repo]["commit"]}


def test_bad_checkpoints_fail_alone_with_one_line_each(first, world):
    result, by_repo, hub = first
    assert result.code == 2 and "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 2, result.err
    assert (
        lines[0].startswith("error: t/evil@1.0.0")
        and "not a plain-tensor PyTorch checkpoint" in lines[0]
    )
    assert (
        lines[1].startswith("error: t/truncated@1.0.0") and "invalid safetensors header" in lines[1]
    )
    assert by_repo["t/evil"]["status"] == by_repo["t/truncated"]["status"] == "failed"
    assert not (world["root"] / "pwned").exists()  # the pickle's code never ran
    assert not (hub / "t" / "evil").exists() and not (hub / "t" / "truncated").exists()


def test_a_killed_worker_is_retried_and_nothing_half_published(first, world):
    _, by_repo, hub = first
    assert not (world["root"] / "kill-once").exists()  # the worker did kill itself
    assert by_repo["t/a-killed"]["status"] == "published"
    repo = LocalHub(hub).repo_dir("t/a-killed")
    assert len(list((repo / "commits").glob("*.json"))) == 1  # one commit: the retry's, whole
    assert not any(
        (world["root"] / "tmp" / "sdpack-batch").iterdir()
    )  # the retry removed the killed one's bundle


@pytest.fixture(scope="module")
def cluster(world, first):
    """A head and a second node, one CPU each, on loopback; stopped (by their pids) afterwards."""
    env = {**os.environ, **world["env"]}
    env.pop("RAY_ADDRESS", None)
    procs = []
    logs = world["root"] / "cluster"
    logs.mkdir()

    def start(name: str, *args: str) -> None:
        temp = Path(tempfile.mkdtemp(prefix=f"r{name}", dir=world["root"] / "r"))
        log = open(logs / f"{name}.log", "w")
        procs.append(
            subprocess.Popen(
                [
                    *RAY,
                    "start",
                    "--block",
                    "--num-cpus",
                    "1",
                    "--disable-usage-stats",
                    "--temp-dir",
                    str(temp),
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )

    try:
        port = _free_port()
        start(
            "head",
            "--head",
            "--port",
            str(port),
            "--node-ip-address",
            "127.0.0.1",
            "--include-dashboard",
            "false",
        )
        address = f"127.0.0.1:{port}"
        _wait_for(lambda: _nodes(address, env) >= 1, logs)
        start("node", "--address", address)
        _wait_for(lambda: _nodes(address, env) >= 2, logs)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(address: str, env: dict) -> int:
    code = f"import ray; ray.init(address={address!r}, log_to_driver=False); print(len([n for n in ray.nodes() if n['Alive']]))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    return (
        int(proc.stdout.strip().splitlines()[-1])
        if proc.returncode == 0 and proc.stdout.strip()
        else 0
    )


def _wait_for(ready, logs: Path, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return
        time.sleep(1)
    raise AssertionError(
        "the Ray cluster did not start: "
        + " ".join(p.read_text()[-500:] for p in logs.glob("*.log"))
    )


def test_rerun_on_a_two_node_cluster_skips_published_versions_and_finishes_the_rest(
    first, world, cluster
):
    """The same catalogue plus three new jobs, by ``--address`` on the cluster, to the same hub."""
    hub = first[2]
    late = [{**world["jobs"][i], "repo": f"t/late-{i}"} for i in (0, 1, 3)]
    jobs = world["root"] / "more.jsonl"
    jobs.write_text(
        (world["root"] / "jobs.jsonl").read_text() + "".join(json.dumps(j) + "\n" for j in late)
    )
    result, by_repo = batch(world, "--hub", str(hub), "--address", cluster, jobs=jobs)
    summary = by_repo.pop("")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 2  # the bad two fail again
    assert summary["ray"] == cluster
    done = [j["repo"] for j in world["jobs"] if j["repo"] not in ("t/evil", "t/truncated")]
    assert all(
        by_repo[r]["status"] == "already" and by_repo[r]["commit"] == first[1][r]["commit"]
        for r in done
    )
    assert (
        summary["published"] == len(late) and summary["libraries"]["compiled"] == 0
    )  # the run's cache, on every node
    assert (
        len({by_repo[j["repo"]]["node"] for j in late}) == 2
    )  # one CPU per node: both nodes packed
    for j in late:
        assert LocalHub(hub).tags(j["repo"]) == {f"v{j['version']}": by_repo[j["repo"]]["commit"]}
