"""pyproject.toml declares what packer/ imports, and only that: every third-party module imported
anywhere in packer/ (function-level imports included) belongs to a declared dependency; every
declared dependency is imported; exact pins are the few whose bytes or ABI matter, each with its
reason written beside it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.helpers import REPO

EXACT = {
    "apache-tvm",
    "apache-tvm-ffi",
    "zstandard",
    "torch",
}  # bytes or ABI depend on their version


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))


def imported_modules() -> dict[str, list[str]]:
    """Top-level module -> files under packer/ importing it (absolute imports only)."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "packer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(REPO)))
    return found


def third_party() -> dict[str, list[str]]:
    return {
        m: files
        for m, files in imported_modules().items()
        if m not in sys.stdlib_module_names and m not in ("packer", "__future__")
    }


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_imported_module_is_a_declared_dependency():
    declared = {requirement_name(r) for r in project()["dependencies"]}
    batch = {requirement_name(r) for r in project()["optional-dependencies"]["batch"]}
    distributions = packages_distributions()
    missing = []
    for module, files in sorted(third_party().items()):
        dists = {normalize(d) for d in distributions.get(module, [])}
        only_batch = all(
            f.startswith("packer/batch/") for f in files
        )  # the [batch] extra: publish-batch only
        if not dists & (declared | batch if only_batch else declared):
            missing.append(
                f"{module} (from {sorted(dists) or 'no installed distribution'}; imported by {files[0]})"
            )
    assert not missing, "imported by packer/ but not in [project] dependencies: " + ", ".join(
        missing
    )
    assert {"pillow", "pyyaml"} <= declared


def test_every_dependency_is_imported_by_packer():
    distributions = packages_distributions()
    used = {normalize(d) for m in third_party() for d in distributions.get(m, [])}
    unused = sorted({requirement_name(r) for r in project()["dependencies"]} - used)
    assert not unused, (
        f"declared but never imported by packer/ (bench-only? put it in the bench extra): {unused}"
    )
    assert "psutil" in {requirement_name(r) for r in project()["optional-dependencies"]["bench"]}


def test_exact_pins_are_the_few_that_need_them_and_every_requirement_says_why():
    deps = project()["dependencies"]
    assert {requirement_name(r) for r in deps if "==" in r} == EXACT
    text = (REPO / "pyproject.toml").read_text()
    block = text[
        text.index("\ndependencies = [") : text.index("\n]", text.index("\ndependencies = ["))
    ].splitlines()
    for i, line in enumerate(block):
        if line.strip().startswith('"'):
            assert "#" in line or block[i - 1].strip().startswith("#"), (
                f"no reason beside {line.strip()}"
            )
