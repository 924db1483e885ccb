"""Pytest fixtures around :class:`HubServer`; import them into a conftest.py to use them.

``hub_server`` is a fresh, started server per test with two users: ``alice`` (member of the
``sdpack`` org) and ``bob``. Their tokens are ``ALICE_TOKEN`` and ``BOB_TOKEN``.
"""

from __future__ import annotations

import pytest

from .server import HubServer

ALICE_TOKEN = "hf_aliceSECRETtoken0123456789abcdef"
BOB_TOKEN = "hf_bobSECRETtoken0123456789abcdefgh"


@pytest.fixture
def hub_server(tmp_path_factory):
    server = HubServer(
        tmp_path_factory.mktemp("hub-server"),
        tokens={ALICE_TOKEN: "alice", BOB_TOKEN: "bob"},
        orgs={"sdpack": ["alice"]},
    )
    server.start()
    yield server
    server.stop()
