"""The job file and the memory estimate, without Ray: what a catalogue may say, and what is refused
before anything runs (one line naming the file and the line)."""

from __future__ import annotations

import json

import pytest

from packer.batch import memory
from packer.batch.jobs import load_jobs
from packer.errors import UsageError
from tests.helpers import packer


def write_jsonl(path, *docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_jsonl_and_toml_give_the_same_jobs(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"x")
    jsonl = write_jsonl(
        tmp_path / "c.jsonl",
        {
            "repo": "org/a",
            "checkpoint": "m.safetensors",
            "version": "v1.0.0",
            "targets": "llvm,webgpu",
            "image_size": 64,
        },
        {"repo": "org/b", "checkpoint": "org/hub-model@main", "version": "2.0.0", "dtype": "fp16"},
    )
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[[job]]\nrepo = "org/a"\ncheckpoint = "m.safetensors"\nversion = "v1.0.0"\n'
        'targets = ["llvm", "webgpu"]\nimage_size = 64\n\n'
        '[[job]]\nrepo = "org/b"\ncheckpoint = "org/hub-model@main"\nversion = "2.0.0"\ndtype = "fp16"\n'
    )
    a, b = load_jobs(jsonl)
    assert load_jobs(toml) == [a, b]
    assert a.checkpoint == str(tmp_path / "m.safetensors")  # relative to the job file
    assert a.version == "1.0.0" and a.targets == ("llvm", "webgpu")
    assert b.checkpoint == "org/hub-model@main" and b.dtype == "fp16"  # a Hub id stays one


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (
            {"repo": "org/a", "checkpoint": "m", "version": "1.0.0", "colour": "red"},
            "Additional properties",
        ),
        ({"repo": "org/a", "checkpoint": "m"}, "'version' is a required property"),
        ({"repo": "org/a", "checkpoint": "m", "version": "one"}, "invalid version"),
        (
            {"repo": "org/a", "checkpoint": "m", "version": "1.0.0", "targets": "llvm,vulkan"},
            "unknown target(s) vulkan",
        ),
        ({"repo": "org/a", "checkpoint": "m", "version": "1.0.0", "dtype": "int8"}, "dtype"),
    ],
)
def test_a_bad_job_names_its_line(tmp_path, doc, says):
    path = write_jsonl(
        tmp_path / "c.jsonl", {"repo": "org/ok", "checkpoint": "m", "version": "1.0.0"}, doc
    )
    with pytest.raises(UsageError) as err:
        load_jobs(path)
    assert f"{path}:2" in err.value.message and says in err.value.one_line()


def test_the_same_version_twice_is_refused(tmp_path):
    job = {"repo": "org/a", "checkpoint": "m", "version": "1.0.0"}
    with pytest.raises(UsageError, match="org/a@1.0.0 appears twice"):
        load_jobs(write_jsonl(tmp_path / "c.jsonl", job, {**job, "version": "v1.0.0"}))


def test_cli_refuses_a_bad_job_file_in_one_line_before_starting_ray(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("repo,checkpoint\n")
    r = packer("publish-batch", str(path), "--hub", str(tmp_path / "hub"))
    assert r.code == 2 and "unknown job file type '.csv'" in r.error_line
    assert not (tmp_path / "hub").exists()


def test_memory_estimate_grows_with_the_checkpoint_and_with_compiling(tmp_path):
    small, big = tmp_path / "s.safetensors", tmp_path / "b.safetensors"
    small.write_bytes(b"0" * 1000)
    big.write_bytes(b"0" * 100_000)
    assert memory.peak_bytes(str(small), compiles=False) < memory.peak_bytes(
        str(big), compiles=False
    )
    assert memory.peak_bytes(str(big), compiles=False) < memory.peak_bytes(str(big), compiles=True)
    assert (
        memory.peak_bytes(str(big), compiles=False)
        == memory.BASE_BYTES + memory.PACK_FACTOR * 100_000
    )
    full = memory.peak_bytes(
        "org/some-hub-model", compiles=False
    )  # unknown size: a full-size SD1.5 file
    assert full == memory.BASE_BYTES + memory.PACK_FACTOR * memory.FULL_SIZE_SD15_BYTES


def test_an_unreachable_cluster_is_one_line_and_leaves_nothing(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    jobs = write_jsonl(
        tmp_path / "c.jsonl", {"repo": "org/a", "checkpoint": "m.safetensors", "version": "1.0.0"}
    )
    r = packer(
        "publish-batch", str(jobs), "--hub", str(tmp_path / "hub"), "--address", f"127.0.0.1:{port}"
    )
    assert r.code == 2 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in r.error_line
    assert not (tmp_path / "hub").exists()
