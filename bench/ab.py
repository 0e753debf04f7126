"""A/B the service path of two or more source trees, side by side on this machine.

    git worktree add /tmp/old <rev>          # the "before" tree
    PYTHONPATH=. .venv/bin/python bench/ab.py /tmp/old/src src --rounds 3

For each round and each tree (interleaved, so the machine's drift hits every tree alike): start a fresh 3-node
``raftkv serve`` cluster running that tree's code (``PYTHONPATH``), then ``raftkv bench`` puts at 64 in flight,
sequential puts and linearizable gets at 64 in flight, ``--duration`` seconds each. Prints one line per run and,
at the end, the median of each shape per tree. The machine is shared and noisy: compare medians of several
rounds, never one run.

Besides ops/s and p50, each cell shows the CPU the three nodes spent per operation (µs, from ``/proc``; 100% of
one core for one second is 1,000,000 µs). On a machine whose speed drifts, CPU per operation moves far less than
throughput does, so it resolves changes of a few percent that ops/s cannot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES: list[tuple[str, list[str]]] = [
    ("put@64", ["--clients", "64"]),
    ("sequential", ["--clients", "1"]),
    ("get@64", ["--clients", "64", "--ratio", "0:1"]),
]

# The cluster runs in a child process so that each tree's code is imported fresh.
CHILD = r"""
import asyncio, json, os, subprocess, sys
from pathlib import Path
try:
    from raftkv.cli.local import LocalCluster  # this tree's layout
except ImportError:
    from raftkv.local import LocalCluster  # trees before the CLI was split by topic

async def main(root, duration, shapes):
    lc = LocalCluster(Path(root), cluster_id="ab")
    lc.start_all()
    out = {}
    try:
        endpoints = ",".join(map(str, lc.endpoints()))
        for _ in range(150):
            # `raftkv status --json`, not the client's API: the command is the same in every tree compared.
            r = subprocess.run(
                [sys.executable, "-m", "raftkv.cli", "status", "--json", "--endpoints", endpoints, "--timeout", "0.5"],
                capture_output=True, text=True, check=False, timeout=30,
            )
            reports = [x for x in json.loads(r.stdout or "[]") if "leader" in x]
            leaders = {x["leader"] for x in reports}
            if len(reports) == 3 and len(leaders) == 1 and None not in leaders:
                break
            await asyncio.sleep(0.2)
        else:
            raise SystemExit("the cluster did not elect a leader")
        tick = os.sysconf("SC_CLK_TCK")

        def cpu_us():
            total = 0
            for p in lc.procs.values():
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
            return total * 1_000_000 / tick

        for name, extra in shapes:
            before = cpu_us()
            r = subprocess.run(
                [sys.executable, "-m", "raftkv.cli", "bench", "--endpoints", endpoints, "--duration",
                 str(duration), "--json", *extra],
                capture_output=True, text=True, check=True, timeout=duration + 60,
            )
            j = json.loads(r.stdout)
            out[name] = [j["ops_per_s"], j["p50_ms"], (cpu_us() - before) / max(1, j["ops"])]
    finally:
        lc.stop_all()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])))
"""


def run_tree(src: Path, duration: float, shapes: list[tuple[str, list[str]]]) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="raftkv-ab-") as root:
        env = dict(os.environ, PYTHONPATH=str(src.resolve()))
        r = subprocess.run(
            [sys.executable, "-c", CHILD, root, str(duration), json.dumps(shapes)],
            capture_output=True,
            text=True,
            env=env,
            timeout=len(shapes) * (duration + 60) + 120,
            check=False,
        )
        if r.returncode != 0:
            raise SystemExit(f"bench/ab.py: the run on {src} failed: {r.stderr.strip().splitlines()[-1:]}")
        result: dict[str, list[float]] = json.loads(r.stdout.strip().splitlines()[-1])
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", type=Path, help="src/ folders to compare (each holds the raftkv package)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per shape (default 6)")
    names = [name for name, _ in SHAPES]
    ap.add_argument(
        "--shapes", default=",".join(names), help=f"comma-separated shapes to run, of {', '.join(names)} (default all)"
    )
    args = ap.parse_args()
    wanted = [w.strip() for w in args.shapes.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown or not wanted:
        ap.error(f"--shapes: unknown shape(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(names)}")
    shapes = [s for s in SHAPES if s[0] in wanted]
    for tree in args.trees:
        if not (tree / "raftkv" / "__init__.py").exists():
            ap.error(f"{tree} does not hold the raftkv package (give the src/ folder of a checkout)")
    results: dict[Path, list[dict[str, list[float]]]] = {t: [] for t in args.trees}
    for rnd in range(args.rounds):
        for tree in args.trees if rnd % 2 == 0 else list(reversed(args.trees)):
            res = run_tree(tree, args.duration, shapes)
            results[tree].append(res)
            cells = "  ".join(f"{k} {v[0]:,.0f}/s p50 {v[1]:.2f} ms cpu {v[2]:.0f} µs/op" for k, v in res.items())
            print(f"round {rnd + 1} {tree}: {cells}", flush=True)
    print("\nmedians over the rounds (ops/s, p50 ms, node CPU µs per op):")
    for tree, runs in results.items():
        cells = "  ".join(
            f"{name} {statistics.median(r[name][0] for r in runs):,.0f}/s "
            f"{statistics.median(r[name][1] for r in runs):.2f} ms "
            f"{statistics.median(r[name][2] for r in runs):.0f} µs"
            for name, _ in shapes
        )
        print(f"  {tree}: {cells}")


if __name__ == "__main__":
    main()
