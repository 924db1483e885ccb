"""packer/'s imports flow one way: each stage imports only the stages before it (errors and
support first, cli last), so a change to a later stage never reaches an earlier one; the schema
loader is a leaf that imports nothing of packer."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

ORDER = (
    "errors",
    "support",
    "ingest",
    "compile",
    "bundle",
    "hub",
    "runtime",
    "interface",
    "batch",
    "cli",
    "__main__",
)
"""packer's top-level modules and packages, earliest first."""
LEAVES = ("packer/support/schemas.py",)


def _stage(module: str) -> str | None:
    """``packer.X...`` → X (``packer`` itself: None)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "packer" and len(parts) > 1 else None


def packer_imports(path: Path) -> list[str]:
    """Every packer module ``path`` imports (function-level and relative imports included)."""
    package = list(path.relative_to(REPO).parts[:-1])  # what a relative import starts from
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
                found += [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            elif node.module:
                found.append(node.module)
    return [m for m in found if m == "packer" or m.startswith("packer.")]


def test_the_stage_list_covers_packer():
    stages = {
        p.stem if p.is_file() else p.name
        for p in (REPO / "packer").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert stages == set(ORDER)


def test_no_stage_imports_a_later_one():
    backwards = []
    for path in sorted((REPO / "packer").rglob("*.py")):
        mine = _stage(".".join(path.relative_to(REPO).with_suffix("").parts))
        for module in packer_imports(path):
            theirs = _stage(module)
            if mine in ORDER and theirs in ORDER and ORDER.index(theirs) > ORDER.index(mine):
                backwards.append(f"{path.relative_to(REPO)} imports {module}")
    assert not backwards, "imports against the flow: " + "; ".join(backwards)


def test_leaves_import_nothing_of_packer():
    for leaf in LEAVES:
        assert packer_imports(REPO / leaf) == [], leaf


def test_the_relative_import_reader_resolves_packages():
    """The check above sees through ``from ..errors import X`` (it would pass vacuously otherwise)."""
    found = packer_imports(REPO / "packer/compile/component.py")
    assert "packer.errors" in found and "packer.compile.export" in found
