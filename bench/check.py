"""Linearizability checker benchmark: the issue's 10,000-operation, 16-key, 10-client history, and harder shapes.

Theory of operation
-------------------
Each scenario generates a history with ``raftkv.check.gen`` (a reference store; optionally one injected
anomaly and a share of timed-out operations), writes it as JSON Lines to a temporary file, and measures:

* **load** — ``load_jsonl`` (parsing and validation);
* **check** — ``check(history)`` (partitioning, compiling, the searches, the explanation);
* **cli** (the headline scenario only) — ``python -m raftkv.check FILE`` end to end in a fresh process,
  interpreter start-up included: what a test harness or a person actually waits for.

Times are medians over ``--runs`` rounds; ``cpu`` is the checking process's CPU time, which stays meaningful
on a busy machine where wall time does not. The headline is the issue's target: under 2 s to check the
10,000-operation, 16-key, 10-client history. The other scenarios show where the time goes as the history gets
harder: an anomaly to find, timed-out writes (which may or may not have happened), and a single hot key.

Run: ``.venv/bin/python bench/check.py`` (about a minute); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from raftkv.check import check, dump_jsonl, load_jsonl
from raftkv.check.gen import Anomaly, generate


@dataclass(frozen=True)
class Scenario:
    name: str
    ops: int
    keys: int
    clients: int = 10
    pending_rate: float = 0.0
    anomaly: Anomaly | None = None
    headline: bool = False


SCENARIOS = [
    Scenario("issue: 10k ops, 16 keys, 10 clients", 10_000, 16, headline=True),
    Scenario("  + 5% timed out", 10_000, 16, pending_rate=0.05),
    Scenario("  + a stale read injected", 10_000, 16, pending_rate=0.05, anomaly="stale_read"),
    Scenario("  + a read of an aborted write injected", 10_000, 16, pending_rate=0.05, anomaly="aborted_read"),
    Scenario("100k ops, 16 keys, 10 clients", 100_000, 16),
    Scenario("hot key: 10k ops, 1 key, 10 clients", 10_000, 1),
    Scenario("hot key: 10k ops, 1 key, 10% timed out", 10_000, 1, pending_rate=0.1),
    Scenario("hot key: same, 20 clients", 10_000, 1, clients=20, pending_rate=0.1),
]


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run(s: Scenario, runs: int, seed: int, tmp: Path) -> None:
    g = generate(seed, ops=s.ops, clients=s.clients, keys=s.keys, pending_rate=s.pending_rate, anomaly=s.anomaly)
    path = tmp / "history.jsonl"
    with path.open("w") as fh:
        dump_jsonl(g.history, fh)
    loads: list[float] = []
    checks: list[float] = []
    cpus: list[float] = []
    clis: list[float] = []
    verdict = ""
    steps = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        history = load_jsonl(path)
        t1 = time.perf_counter()
        c1 = time.process_time()
        result = check(history, timeout_s=120)
        t2 = time.perf_counter()
        cpus.append(time.process_time() - c1)
        loads.append(t1 - t0)
        checks.append(t2 - t1)
        verdict = result.kind.value
        steps = sum(p.steps for p in result.partitions.values())
        if s.headline:
            t3 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "raftkv.check", str(path)], capture_output=True, check=False)
            clis.append(time.perf_counter() - t3)
    cli = f"  cli {_median(clis):6.3f} s" if clis else ""
    print(
        f"{s.name:<40} {verdict:<8} load {_median(loads):6.3f} s  check {_median(checks):6.3f} s"
        f" (cpu {_median(cpus):6.3f} s)"
        f"  ({steps:>9,} model steps){cli}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one run of the headline scenario only")
    args = ap.parse_args()
    scenarios = [s for s in SCENARIOS if s.headline] if args.quick else SCENARIOS
    runs = 1 if args.quick else args.runs
    print(f"python {sys.version.split()[0]}, {runs} run(s) per scenario, medians; seed {args.seed}")
    with tempfile.TemporaryDirectory() as d:
        for s in scenarios:
            run(s, runs, args.seed, Path(d))


if __name__ == "__main__":
    main()
