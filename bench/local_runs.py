"""What the side-by-side cluster benchmarks share (bench/tls_cost.py, bench/auth_cost.py, bench/hostile.py): a
local cluster's leader, the CPU its nodes spent, and one ``raftkv bench`` run against it."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from raftkv.cli.local import LocalCluster

CLI = [sys.executable, "-m", "raftkv.cli"]


def cpu_us(lc: LocalCluster) -> float:
    """CPU time (user + system) the cluster's node processes have spent so far, in µs."""
    total = 0
    for p in lc.procs.values():
        with open(f"/proc/{p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total * 1_000_000 / os.sysconf("SC_CLK_TCK")


def wait_leader(lc: LocalCluster, client_args: Sequence[str] = (), what: str = "the cluster") -> int:
    """The leader every node agrees on (polls ``raftkv status`` for up to 30 s)."""
    endpoints = ",".join(map(str, lc.endpoints()))
    for _ in range(150):
        r = subprocess.run(
            [*CLI, "status", "--json", "--endpoints", endpoints, "--timeout", "0.5", *client_args],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        reports = [x for x in json.loads(r.stdout or "[]") if "leader" in x]
        if len(reports) == len(lc.ids) and len({x["leader"] for x in reports}) == 1 and reports[0]["leader"]:
            return int(reports[0]["leader"])
        time.sleep(0.2)
    raise SystemExit(f"{sys.argv[0]}: {what} elected no leader")


def raftkv_bench(lc: LocalCluster, duration: float, args: Sequence[str] = ()) -> dict[str, Any]:
    """One ``raftkv bench --json`` run against ``lc`` with ``args``; its summary."""
    endpoints = ",".join(map(str, lc.endpoints()))
    r = subprocess.run(
        [*CLI, "bench", "--endpoints", endpoints, "--duration", str(duration), "--json", *args],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    )  # fmt: skip
    out: dict[str, Any] = json.loads(r.stdout)
    return out


Figures = dict[str, tuple[float, float, float]]
"""Per shape: (ops/s, p50 ms, node CPU µs per op)."""


def bench_shapes(
    lc: LocalCluster, shapes: Sequence[tuple[str, Sequence[str]]], duration: float, client_args: Sequence[str] = ()
) -> Figures:
    """One ``raftkv bench`` run per shape (its name, its flags), with the CPU the nodes spent per operation."""
    out: Figures = {}
    for name, extra in shapes:
        before = cpu_us(lc)
        j = raftkv_bench(lc, duration, [*extra, *client_args])
        out[name] = (j["ops_per_s"], j["p50_ms"], (cpu_us(lc) - before) / max(1, j["ops"]))
    return out


def _cells(got: Figures) -> str:
    return "  ".join(f"{k} {v[0]:,.0f}/s p50 {v[1]:.2f} ms cpu {v[2]:.0f} µs/op" for k, v in got.items())


def interleaved(modes: tuple[str, str], rounds: int, shapes: Sequence[str], run: Callable[[str, int], Figures]) -> None:
    """``run(mode, round)`` for both modes in every round, alternating which goes first (the machine is shared
    and noisy: side by side, never one after the other); prints each run, the medians and the ratios."""
    base, other = modes
    results: dict[str, list[Figures]] = {base: [], other: []}
    width = max(map(len, modes))
    for rnd in range(rounds):
        for mode in modes if rnd % 2 == 0 else modes[::-1]:
            got = run(mode, rnd)
            results[mode].append(got)
            print(f"round {rnd + 1} {mode:{width}s}: {_cells(got)}", flush=True)
    print("medians:")
    med: dict[str, dict[str, list[float]]] = {}
    for mode, runs in results.items():
        med[mode] = {name: [statistics.median(r[name][k] for r in runs) for k in range(3)] for name in shapes}
        print(f"  {mode:{width}s}: {_cells({k: (v[0], v[1], v[2]) for k, v in med[mode].items()})}")
    for name in shapes:
        b, o = med[base][name], med[other][name]
        print(
            f"  {name}: {other} / {base} ops/s {o[0] / b[0]:.2f}, p50 {o[1] / b[1]:.2f}, CPU per op {o[2] / b[2]:.2f}"
        )
