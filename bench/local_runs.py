"""What the side-by-side cluster benchmarks share (bench/tls_cost.py, bench/auth_cost.py, bench/hostile.py): a
local cluster's leader, the CPU its nodes spent, and one ``raftkv bench`` run against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
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
