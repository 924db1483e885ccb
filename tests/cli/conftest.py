"""The CLI run in this process (typer's CliRunner on the real app: every verb, cheaply), the test
Hub and small synthetic bundles (no compile)."""

from __future__ import annotations

import pytest

from tests.helpers import Result
from tests.hub.conftest import hf_env, make_bundle  # noqa: F401 - fixtures
from tests.hub_server.fixtures import ALICE_TOKEN, hub_server  # noqa: F401 - fixtures

__all__ = ["ALICE_TOKEN", "make_bundle"]


@pytest.fixture
def cli(monkeypatch):
    """``cli(*args)`` -> Result: `packer ARGS` through the real Typer app, in this process."""
    from typer.testing import CliRunner

    from packer.cli import app

    monkeypatch.setenv("SDPACK_NO_PROGRESS", "1")

    def run(*args) -> Result:
        r = CliRunner().invoke(app, [str(a) for a in args], prog_name="packer", terminal_width=200)
        return Result(r.exit_code, r.stdout, r.stderr)

    return run
