"""The client package depends only on the wire, the errors and the pure KV types: never on a server."""

from __future__ import annotations

import ast
from pathlib import Path

import raftkv.client

ALLOWED = (
    "raftkv.client",
    "raftkv.errors",
    "raftkv.kv",
    "raftkv.raft.types",
    "raftkv.transport",
    "raftkv.tasks",
    "raftkv.trace",  # stage timestamps for bench/trace_put.py; imports nothing of raftkv
)
# raftkv.kv means its pure modules (commands, keys, watch, errors), not the state machine.
FORBIDDEN_KV = ("raftkv.kv.machine", "raftkv.kv.backend", "raftkv.kv.sessions")


def _raftkv_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("raftkv"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raftkv"):
            if node.module == "raftkv":  # from raftkv import trace: the submodules it names
                names.update(f"raftkv.{a.name}" for a in node.names)
            else:
                names.add(node.module)
    return names


def _allowed(module: str) -> bool:
    if any(module == f or module.startswith(f + ".") for f in FORBIDDEN_KV):
        return False
    return any(module == a or module.startswith(a + ".") for a in ALLOWED)


def test_the_client_package_imports_only_what_it_may() -> None:
    root = Path(raftkv.client.__file__).parent
    files = sorted(root.glob("*.py"))
    assert len(files) >= 8  # the scan really looked at the package
    for path in files:
        bad = sorted(m for m in _raftkv_imports(path) if not _allowed(m))
        assert not bad, f"raftkv/client/{path.name} imports {bad}"


def test_the_scan_catches_a_server_import(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    # raftkv.kv.keys, a pure module, is allowed.
    sample.write_text("from raftkv.kvserver import app\nimport raftkv.runtime.node\nfrom raftkv.kv.keys import k\n")
    assert sorted(m for m in _raftkv_imports(sample) if not _allowed(m)) == ["raftkv.kvserver", "raftkv.runtime.node"]


def test_backup_files_do_not_import_the_client() -> None:
    backup = Path(raftkv.client.__file__).parent.parent / "backup.py"
    assert not any(m.startswith("raftkv.client") for m in _raftkv_imports(backup))
