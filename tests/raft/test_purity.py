"""The pure packages import nothing that does I/O, reads a clock, or draws unseeded randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import raftkv

FORBIDDEN = {"asyncio", "socket", "time", "random", "os", "threading", "subprocess", "selectors", "datetime"}
PURE_PACKAGES = ("raft", "kv")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_pure_packages_import_no_io_clock_or_randomness() -> None:
    root = Path(raftkv.__file__).parent
    checked = 0
    for pkg in PURE_PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            bad = _imports(path) & FORBIDDEN
            assert not bad, f"{path.relative_to(root)} imports {sorted(bad)}: the {pkg} package must stay pure"
            checked += 1
    assert checked >= 10  # the scan really looked at the core's modules


def test_the_scan_detects_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os.path\nfrom time import monotonic\nfrom . import sibling\n")
    assert _imports(sample) & FORBIDDEN == {"os", "time"}
