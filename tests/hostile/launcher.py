"""Client of forkserver.py: run the real `packer` CLI as child processes of a pre-loaded server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers import REPO, Result


class Launcher:
    """``run(argv)`` → :class:`tests.helpers.Result`; ``start(argv)`` → a :class:`Running` to kill."""

    def __init__(self, env: dict[str, str], workdir: Path):
        merged = {**os.environ, "SDPACK_NO_PROGRESS": "1", **env}
        self.env = {k: v for k, v in merged.items() if v is not None}  # None: unset
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.forkserver"],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        first = json.loads(self.proc.stdout.readline() or "{}")
        assert first.get("ready"), "fork server did not start"
        self._lock = threading.Lock()
        self._n = 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def start(self, *argv: str, env: dict | None = None, cwd: Path | None = None) -> Running:
        self._lock.acquire()
        self._n += 1
        out = self.workdir / f"{self._n}.out"
        err = self.workdir / f"{self._n}.err"
        req = {
            "argv": list(map(str, argv)),
            "cwd": str(cwd or REPO),
            "env": env or {},
            "stdout": str(out),
            "stderr": str(err),
        }
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self.proc.stdout.readline())["pid"]
        return Running(self, pid, out, err)

    def run(
        self, *argv: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300
    ) -> Result:
        return self.start(*argv, env=env, cwd=cwd).wait(timeout)


class Running:
    def __init__(self, launcher: Launcher, pid: int, out: Path, err: Path):
        self.launcher, self.pid, self.out, self.err = launcher, pid, out, err
        self.t0 = time.monotonic()
        self.result: Result | None = None

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float = 300) -> Result:
        if self.result is None:
            timer = threading.Timer(timeout, self.kill)
            timer.start()
            try:
                done = json.loads(self.launcher.proc.stdout.readline())
            finally:
                timer.cancel()
                self.launcher._lock.release()
            assert done["pid"] == self.pid
            self.result = Result(
                done["code"],
                self.out.read_text(errors="replace"),
                self.err.read_text(errors="replace"),
            )
        return self.result
