"""Fault injection: make one protocol step fail the way networks and servers really fail.

Points are the client's steps: ``create_repo``, ``preupload``, ``lfs_batch``, ``lfs_put``,
``lfs_verify``, ``commit``, ``tag``, ``resolve`` (HEAD and GET of a file), ``download`` (GET of a
file only, optionally of one ``path``). Modes:

- ``"500"``: answer 500 (the client retries 5xx, so use ``times=None`` to fail for good);
- ``"drop"``: close the connection without an answer;
- ``"half"``: only for ``lfs_put``: read half of the body, then drop the connection;
- ``"cut"``: only for ``download``: promise the whole span, send half of it, drop the connection.

>>> server.faults.add("lfs_put", "half")                                   # doctest: +SKIP
>>> server.faults.add("commit", "500", times=1)                            # doctest: +SKIP
>>> server.faults.add("download", "cut", path="weights/unet/params_shard_0.bin.zst")  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

POINTS = {
    "create_repo",
    "preupload",
    "lfs_batch",
    "lfs_put",
    "lfs_verify",
    "commit",
    "tag",
    "resolve",
    "download",
}
MODES = {"500", "drop", "half", "cut"}
ONLY_AT = {"half": "lfs_put", "cut": "download"}


@dataclass
class Fault:
    mode: str
    times: int | None  # None: every time
    path: str | None = None  # None: every file (``download`` only)
    fired: int = 0


class Faults:
    def __init__(self):
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()

    def add(self, point: str, mode: str, times: int | None = None, path: str | None = None) -> None:
        if point not in POINTS or mode not in MODES or ONLY_AT.get(mode, point) != point:
            raise ValueError(f"unknown fault {point}:{mode}")
        if path is not None and point != "download":
            raise ValueError("only download faults take a path")
        with self._lock:
            self._faults[point] = Fault(mode, times, path)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, point: str, path: str | None = None) -> str | None:
        """The mode to apply now at ``point`` for ``path`` (and count it), or None."""
        with self._lock:
            fault = self._faults.get(point)
            if fault is None or (fault.times is not None and fault.fired >= fault.times):
                return None
            if fault.path is not None and fault.path != path:
                return None
            fault.fired += 1
            return fault.mode

    def fired(self, point: str) -> int:
        with self._lock:
            return self._faults[point].fired if point in self._faults else 0
