"""A progress bar while a checkpoint is read, converted and hashed (when stderr is a terminal)."""

from __future__ import annotations

import io

from rich.console import Console

from packer.ingest import ingest
from packer.support import progress


def test_ingest_shows_each_phase(example, monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=screen, force_terminal=True, width=120))
    monkeypatch.setattr(progress, "_enabled", lambda: True)
    ingest(example["safetensors"], tokenizer=example["tokenizer"])
    ingest(example["diffusers"])
    shown = screen.getvalue()
    name = example["safetensors"].name
    for phase in (
        f"reading {name}",
        f"converting {name}",
        f"hashing {name}",
        "reading diffusers",
        "hashing diffusers",
    ):
        assert phase in shown, phase


def test_quiet_when_disabled(example, monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=screen, force_terminal=True, width=120))
    monkeypatch.setenv("SDPACK_NO_PROGRESS", "1")
    ingest(example["safetensors"], tokenizer=example["tokenizer"])
    assert screen.getvalue() == ""
