"""A pre-loaded launcher for the real `packer` CLI: one child process per command.

Starting `python -m packer pack` costs ~7 s of imports (torch, diffusers, TVM) before it reads
a byte of input; 40 hostile inputs would take minutes. This server imports those modules once,
then for every request forks a child that runs exactly what `python -m packer` runs
(``runpy`` on the ``packer`` package, as ``__main__``) with the request's argv, cwd and
environment, stdout/stderr going to files. The child is a real, separate process: its exit status,
its stderr bytes and a SIGKILL sent to it are what a user would see and do.

Protocol (one JSON object per line): request ``{"argv", "cwd", "env", "stdout", "stderr"}`` →
``{"pid": N}`` as soon as the child exists → ``{"pid": N, "code": C}`` when it ends
(``C`` negative: killed by signal ``-C``).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback
import warnings

PRELOAD = (
    "torch", "numpy", "jsonschema", "zstandard", "typer", "huggingface_hub", "huggingface_hub.hf_api",
    "diffusers", "diffusers.loaders.single_file_utils", "transformers", "tokenizers", "safetensors.torch",
    "packer.cli", "packer.bundle", "packer.ingest", "packer.ingest.single_file", "packer.ingest.diffusers_dir",
    "packer.interface.pack", "packer.interface.publish", "packer.interface.pull", "packer.interface.resolve",
    "packer.interface.verify", "packer.hub.hf", "packer.hub.local", "packer.hub.resolve",
)  # fmt: skip


def _preload() -> None:
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PRELOAD + tuple(
            filter(None, os.environ.get("SDPACK_FORKSERVER_PRELOAD", "").split(","))
        ):
            try:
                importlib.import_module(name)
            except (
                Exception
            ):  # a module that does not import fails the command that needs it, not us
                pass


def _child(req: dict) -> None:
    if True:
        os.chdir(req["cwd"])
        for key, value in req["env"].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        import tempfile

        tempfile.tempdir = None  # re-read TMPDIR, as a fresh interpreter would
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        sys.argv = ["packer", *req["argv"]]
        code = 0
        try:
            runpy.run_module("packer", run_name="__main__", alter_sys=True)
        except SystemExit as exc:  # what the interpreter does with it
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # what the interpreter does with an uncaught exception
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def main() -> None:
    _preload()
    out = sys.stdout
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        out.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _child(req)
            finally:
                os._exit(99)
        print(json.dumps({"pid": pid}), file=out, flush=True)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps({"pid": pid, "code": code}), file=out, flush=True)


if __name__ == "__main__":
    main()
