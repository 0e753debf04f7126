"""The layering rules of docs/design.md ("The rooms"), checked on every import under src/raftkv. No allow-list.

Every ``import`` and ``from ... import`` counts: at module level, inside functions, and under ``TYPE_CHECKING``.
A rule names a group of modules and what it may not import (or what alone it may import); the cycle check
runs over the whole module graph.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import raftkv

ROOT = Path(raftkv.__file__).parent


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def _modules(root: Path = ROOT, prefix: str = "raftkv") -> dict[str, Module]:
    out: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join([prefix, *parts])
        out[name] = Module(name, path, ast.parse(path.read_text(), filename=str(path)))
    return out


def _imports(mod: Module, known: set[str]) -> Iterator[str]:
    """The raftkv modules ``mod`` imports (``from pkg import submodule`` names the submodule)."""
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("raftkv"):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.name if mod.is_package else mod.name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("raftkv"):
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            if subs:
                yield from subs
                if len(subs) < len(node.names):
                    yield target
            else:
                yield target


def _in(name: str, *groups: str) -> bool:
    return any(name == g or name.startswith(g + ".") for g in groups)


MODULES = _modules()
KNOWN = set(MODULES)
GRAPH = {name: sorted(set(_imports(m, KNOWN))) for name, m in MODULES.items()}

CORE = "raftkv.raft"
KV = "raftkv.kv"
STORAGE = "raftkv.storage"
TRANSPORT = "raftkv.transport"
RUNTIME = "raftkv.runtime"
KVSERVER = "raftkv.kvserver"
SERVICES = ("raftkv.kvserver.service", "raftkv.kvserver.watches", "raftkv.kvserver.admin")
FRONT_ENDS = ("raftkv.kvserver.capnp_api",)
CLIENT = ("raftkv.client",)
CLI = ("raftkv.cli", "raftkv.demo")
SIM = "raftkv.sim"
CHECK = "raftkv.check"
ABOVE_RUNTIME = (KVSERVER, *CLIENT, *CLI, "raftkv.backup", SIM, CHECK)


def _violations(group: tuple[str, ...], allowed: tuple[str, ...] = (), forbidden: tuple[str, ...] = ()) -> list[str]:
    bad: list[str] = []
    for name, targets in GRAPH.items():
        if not _in(name, *group):
            continue
        for t in targets:
            if allowed and not _in(t, *allowed):
                bad.append(f"{name} imports {t}")
            if forbidden and _in(t, *forbidden):
                bad.append(f"{name} imports {t}")
    return bad


def test_the_scan_sees_the_whole_code_base() -> None:
    for group in (CORE, KV, STORAGE, TRANSPORT, RUNTIME, KVSERVER, *CLIENT, SIM, CHECK):
        assert any(_in(m, group) for m in MODULES), f"no module in {group}: the rules below would test nothing"
    assert "raftkv.raft.errors" in GRAPH["raftkv.raft.log"]
    assert any(t.startswith("raftkv.kv") for t in GRAPH["raftkv.storage.kv_lmdb"])


def test_the_core_imports_nothing_outside_itself() -> None:
    assert _violations((CORE,), allowed=(CORE,)) == []


def test_kv_imports_only_itself_and_the_cores_types_and_errors() -> None:
    assert _violations((KV,), allowed=(KV, "raftkv.raft.types", "raftkv.raft.errors")) == []


def test_the_checker_imports_only_itself() -> None:
    assert _violations((CHECK,), allowed=(CHECK,)) == []


def test_the_runtime_imports_no_kv_store_server_front_end_client_or_cli() -> None:
    assert _violations((RUNTIME,), forbidden=(KV, KVSERVER, *CLIENT, *CLI, "raftkv.backup", SIM, CHECK)) == []


def test_transport_and_storage_import_nothing_from_the_runtime_up() -> None:
    assert _violations((TRANSPORT, STORAGE), forbidden=(RUNTIME, *ABOVE_RUNTIME, "raftkv.errors")) == []


def test_the_kv_services_import_no_front_end_and_no_capnp() -> None:
    assert _violations(SERVICES, forbidden=(*FRONT_ENDS, "raftkv.transport.wire", "raftkv.transport.streams")) == []
    for name in SERVICES:
        top = {n.split(".")[0] for n in _third_party(MODULES[name])}
        assert "capnp" not in top, f"{name} imports capnp"


def test_the_client_imports_no_runtime_server_side_or_storage() -> None:
    assert _violations(CLIENT, forbidden=(RUNTIME, KVSERVER, STORAGE, *CLI, "raftkv.backup", SIM)) == []


def test_the_simulator_imports_no_runtime_transport_or_front_end() -> None:
    assert _violations((SIM,), forbidden=(RUNTIME, TRANSPORT, KVSERVER, *CLIENT, *CLI)) == []


def test_the_runtime_and_the_simulator_carry_out_readies_through_the_same_planner() -> None:
    assert "raftkv.raft.driver" in GRAPH["raftkv.runtime.node"]
    assert "raftkv.raft.driver" in GRAPH["raftkv.sim.cluster"]


def _third_party(mod: Module) -> Iterator[str]:
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def _own_names(tree: ast.Module) -> set[str]:
    """Names a module defines itself: functions, classes, class attributes, ``self.x = ...`` targets."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _reaches_inside(mod: Module) -> list[str]:
    """``x.core``, ``x.transport``, ``x._private`` of another module (x not self/cls), ``from m import _private``."""
    bad: list[str] = []
    own = _own_names(mod.tree)
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else ""
            private = node.attr.startswith("_") and not node.attr.startswith("__") and node.attr not in own
            if node.attr in ("core", "transport") or (private and owner not in ("self", "cls")):
                bad.append(f"{mod.name}:{node.lineno} uses .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"{mod.name}:{node.lineno} imports {alias.name} from {node.module}")
    return bad


def test_front_ends_and_services_use_only_public_methods_of_the_runtime() -> None:
    mods = [m for name, m in MODULES.items() if _in(name, KVSERVER, *CLIENT, *CLI)]
    assert len(mods) >= 5
    bad = [line for m in mods for line in _reaches_inside(m)]
    assert bad == []


def test_reaching_inside_is_detected() -> None:
    sample = ast.parse("node.core.step(m)\nx = node._storage\nfrom a import _b\nself._ok = 1\nw._ok()\n")
    found = _reaches_inside(Module("sample", Path("sample.py"), sample))
    assert len(found) == 3, found  # w._ok is this module's own name


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (or with a self-edge): Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, []):
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_there_are_no_import_cycles_type_checking_edges_included() -> None:
    assert _cycles(GRAPH) == []


def test_a_cycle_is_detected() -> None:
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_embedding_the_runtime_loads_nothing_of_the_kv_store_or_the_client() -> None:
    code = (
        "import sys, raftkv.runtime, raftkv.runtime.statemachine\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('raftkv.kv', 'raftkv.client', "
        "'raftkv.cli')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
