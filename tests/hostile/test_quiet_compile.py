"""A real compile through the CLI leaves stderr empty: TVM's own C++ warnings ("Fast mode
segfaults when there are out-of-bounds indices...") are shown only with SDPACK_VERBOSE=1."""

from __future__ import annotations


def test_a_real_compile_keeps_stderr_clean(pack_run):
    _, result = pack_run
    assert (
        "3 compiled, 0 reused" in result.out
    )  # the libraries were built in this run, not taken from a cache
    assert result.err == ""
