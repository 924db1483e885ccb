"""CLI conventions: -h, --version, shell completion, choices in help, ORG/NAME[@REV] shown as
written, one hub flag (old spellings still accepted), one-line usage errors, XDG_CACHE_HOME,
HF_HUB_DISABLE_PROGRESS_BARS, and native stderr kept quiet unless SDPACK_VERBOSE=1."""

from __future__ import annotations

import os
import re
import sys

import pytest

from packer import cli as cli_module
from packer.errors import HubError
from packer.support import native_log, progress
from tests.cli.conftest import make_bundle
from tests.helpers import packer

VERBS = [
    "verify",
    "inspect",
    "pack",
    "generate",
    "publish",
    "publish-batch",
    "resolve",
    "pull",
    "versions",
    "serve",
    "version",
]


@pytest.mark.parametrize("verb", VERBS)
def test_h_is_help(cli, verb):
    r = cli(verb, "-h")
    assert r.code == 0 and r.out.startswith(f"Usage: packer {verb} ")
    assert "--json" in r.out


def test_help_shows_brackets_and_choices_as_written(cli):
    pack = cli("pack", "-h").out
    assert "Hub id ORG/NAME[@REV]" in pack  # not eaten as markup
    assert "--dtype [fp16|fp32]" in pack
    assert (
        "--targets [llvm|cpu|cuda|cuda-sm80|cuda-sm86|cuda-sm89|cuda-sm90|opencl|opencl-mali|webgpu],..."
        in pack
    )
    generate = cli("generate", "-h").out
    assert (
        "--scheduler [dpm++|euler|euler-a|ddim|pndm]" in generate
        and "--device [cpu|cuda|opencl]" in generate
    )
    assert (
        "ORG/NAME@REV|LOCKFILE" in packer("pull", "--help").out
    )  # the real command, as a shell runs it


def test_choices_are_the_registries():
    from packer.compile.targets import TARGETS
    from packer.interface.pack import DTYPES
    from packer.runtime import schedulers
    from packer.runtime.generate import DEVICE_KINDS

    assert set(cli_module.TARGETS) == set(TARGETS)
    assert set(cli_module.DTYPES) == {d for d in DTYPES if d.startswith("fp")}
    assert cli_module.SCHEDULERS == schedulers.NAMES
    assert set(cli_module.DEVICES) == set(DEVICE_KINDS)


def test_version_flag_and_verb(cli):
    flag, verb = cli("--version"), cli("version")
    assert flag.code == verb.code == 0 and flag.out == verb.out and flag.out.startswith("sdpack ")


def test_shell_completion():
    script = packer("--show-completion", "bash")
    assert script.code == 0 and "_PACKER_COMPLETE=complete_bash" in script.out
    env = {
        "_PACKER_COMPLETE": "complete_bash",
        "COMP_WORDS": "packer generate b --scheduler eu",
        "COMP_CWORD": "4",
    }
    assert packer(env=env).out.split() == ["euler", "euler-a"]
    env.update(COMP_WORDS="packer pack x --targets llvm,w")
    assert packer(env=env).out.split() == ["llvm,webgpu"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["pull", "sdpack/x@1.0.0"], "error: Missing option '--out'. (see `packer pull -h`)"),
        (
            ["verify", "b", "--frobnicate"],
            "error: No such option: --frobnicate (see `packer verify -h`)",
        ),
        (
            [
                "publish",
                "sdpack/x",
                "--bundle",
                "b",
                "--version",
                "1.0.0",
                "--hub",
                "h1",
                "--to",
                "h2",
            ],
            "error: --hub and --to name different hubs (pass only --hub hf|URL|DIR)",
        ),
    ],
)
def test_usage_errors_are_one_line(cli, args, message):
    r = cli(*args)
    assert r.code == 2 and r.error_line == message and r.out == ""


def test_old_hub_spellings_still_work_and_are_hidden(cli, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    hub = tmp_path / "hub"
    assert (
        cli("publish", "sdpack/tiny-sd", "--bundle", bundle, "--version", "1.0.0", "--to", hub).code
        == 0
    )
    by_hub, by_endpoint = (
        cli("resolve", "sdpack/tiny-sd@1.0.0", "--hub", hub),
        cli("resolve", "sdpack/tiny-sd@1.0.0", "--endpoint", hub),
    )
    assert by_hub.code == 0 and by_hub.out == by_endpoint.out
    for verb in ("publish", "resolve", "pull", "versions"):
        text = cli(verb, "-h").out
        assert "--hub hf|URL|DIR" in text and not re.search(r"--to\b|--endpoint\b", text)


def test_hub_option_merging():
    assert cli_module._hub(None) is None
    assert cli_module._hub("hf", "hf") == "hf"
    assert (
        cli_module._hub(None, "hf", "http://h") == "http://h"
    )  # --to hf --endpoint URL: the Hub at URL
    assert cli_module._hub(None, "dir", None) == "dir"
    with pytest.raises(Exception, match="--to and --endpoint name different hubs"):
        cli_module._hub(None, "dir", "http://h")


def test_cache_root_honours_xdg_cache_home(monkeypatch, tmp_path):
    from packer.compile.cache import cache_root

    monkeypatch.delenv("SDPACK_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "sdpack"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache_root() == cache_root.__globals__["Path"].home() / ".cache" / "sdpack"
    monkeypatch.setenv("SDPACK_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


class _Terminal:
    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(
    "env,shown",
    [
        ({}, True),
        ({"SDPACK_NO_PROGRESS": "1"}, False),
        ({"HF_HUB_DISABLE_PROGRESS_BARS": "1"}, False),
        ({"HF_HUB_DISABLE_PROGRESS_BARS": "0"}, True),
    ],
)
def test_progress_bars_follow_the_environment(monkeypatch, env, shown):
    for var in ("SDPACK_NO_PROGRESS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert progress._enabled() is shown


def test_native_stderr_is_kept_quiet(capfd, monkeypatch):
    monkeypatch.delenv("SDPACK_VERBOSE", raising=False)
    with native_log.quiet("test"):
        os.write(2, b"[00:00:00] transform.h:1261: Warning: Fast mode segfaults\n")
        print("python's own line", file=sys.stderr)
    err = capfd.readouterr().err
    assert "python's own line" in err and "Fast mode" not in err

    with pytest.raises(
        HubError
    ) as info:  # a user-facing error stays one line; the log is kept in a file
        with native_log.quiet("test"):
            os.write(2, b"what tvm said\n")
            raise HubError("it failed", "try again")
    hint = info.value.hint
    assert hint.startswith("try again; native log: ")
    with open(hint.split("native log: ")[1]) as f:
        assert f.read() == "what tvm said\n"
    assert "what tvm said" not in capfd.readouterr().err

    with pytest.raises(RuntimeError):  # a bug: everything is shown
        with native_log.quiet("test"):
            os.write(2, b"what tvm said\n")
            raise RuntimeError("bug")
    assert "what tvm said" in capfd.readouterr().err

    monkeypatch.setenv("SDPACK_VERBOSE", "1")
    with native_log.quiet("test"):
        os.write(2, b"verbose native line\n")
    assert "verbose native line" in capfd.readouterr().err
