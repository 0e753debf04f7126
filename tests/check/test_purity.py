"""The checker's algorithm modules are pure: no I/O, clock, randomness or concurrency; only the budget reads time."""

from __future__ import annotations

import ast
from pathlib import Path

import raftkv.check

FORBIDDEN = {"asyncio", "socket", "time", "random", "os", "threading", "subprocess", "selectors", "datetime"}
ALLOWED = {
    "checker.py": {"time"},  # the time budget
    "gen.py": {"random"},  # seeded generation for tests and benchmarks
    "__main__.py": set(),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_checker_modules_import_no_io_clock_or_randomness() -> None:
    root = Path(raftkv.check.__file__).parent
    modules = sorted(root.glob("*.py"))
    assert {p.name for p in modules} >= {"history.py", "models.py", "search.py", "html.py", "checker.py"}
    for path in modules:
        bad = _imports(path) & FORBIDDEN - ALLOWED.get(path.name, set())
        assert not bad, f"{path.name} imports {sorted(bad)}"
