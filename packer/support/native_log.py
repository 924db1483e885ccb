"""Native libraries' own logging kept off the terminal unless ``SDPACK_VERBOSE=1``.

TVM 0.27 writes ``LOG(WARNING)`` with ``std::cerr`` straight to file descriptor 2, with no level
switch (``TVM_LOG_DEBUG`` only turns on its debug logs), and tools it runs (emcc) inherit that
descriptor. So :func:`quiet` points descriptor 2 at a temporary file for the duration of a block,
while Python's own ``sys.stderr`` (status lines, progress bars, warnings) keeps writing to the
terminal through a copy of the original descriptor. What the libraries said is shown when the
block fails with an unexpected error; for a user-facing error it is saved to a file named in the
error's hint, so the failure stays one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator

from packer.errors import SdpackError


def verbose() -> bool:
    return os.environ.get("SDPACK_VERBOSE", "").strip() not in ("", "0")


@contextlib.contextmanager
def quiet(what: str) -> Iterator[None]:
    """Run the block with native writes to descriptor 2 captured (``what`` names the log file)."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 to redirect (embedded, closed)
        yield
        return
    log = tempfile.TemporaryFile()
    python_stderr = sys.stderr
    encoding = getattr(python_stderr, "encoding", None) or "utf-8"
    terminal = io.TextIOWrapper(
        os.fdopen(os.dup(saved), "wb"),
        encoding=encoding,
        errors="backslashreplace",
        line_buffering=True,
    )
    os.dup2(log.fileno(), 2)
    sys.stderr = terminal
    try:
        yield
    except SdpackError as exc:
        path = _keep(_restore(saved, log, terminal, python_stderr), what)
        if path:
            exc.hint = f"{exc.hint}; native log: {path}" if exc.hint else f"native log: {path}"
        raise
    except BaseException:
        text = _restore(saved, log, terminal, python_stderr)
        sys.stderr.write(text)
        raise
    else:
        _restore(saved, log, terminal, python_stderr)


def _restore(saved: int, log, terminal, python_stderr) -> str:
    """Put descriptor 2 and ``sys.stderr`` back; return what was captured."""
    terminal.flush()
    os.dup2(saved, 2)
    os.close(saved)
    sys.stderr = python_stderr
    terminal.close()
    log.seek(0)
    text = log.read().decode("utf-8", errors="backslashreplace")
    log.close()
    return text


def _keep(text: str, what: str) -> str | None:
    if not text.strip():
        return None
    fd, path = tempfile.mkstemp(prefix=f"sdpack-{what}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path
