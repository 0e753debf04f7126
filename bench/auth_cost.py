"""What authentication costs: the same 3-node cluster without users, and with auth on, side by side.

    PYTHONPATH=. .venv/bin/python bench/auth_cost.py [--rounds 3] [--duration 6]

For each round, two fresh clusters of three ``raftkv serve`` processes (fsync on), one after the other,
alternating which goes first: ``off`` (the auth store never touched: what every cluster without users runs),
and ``on`` (users root and bench, role bench with readwrite on the prefix ``bench/`` and read on ``config/``,
authentication enabled). Each runs ``raftkv bench`` (``--user bench:...`` for ``on``: every request carries a
token, every write is checked on the leader and again on each replica as ``Authed``) for puts at 64 in flight
and sequential puts; one line per run, the medians per mode, with the CPU the three nodes spent per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from bench.local_runs import cpu_us, raftkv_bench, wait_leader

from raftkv.cli.local import LocalCluster
from raftkv.client import connect

SHAPES = [("put@64", ["--clients", "64"]), ("sequential", ["--clients", "1"])]


async def enable_auth(endpoints: list[str]) -> None:
    async with connect(endpoints, cluster_id="authbench", timeout=10.0) as c:
        await c.auth.user_add("root", "rootpw")
        await c.auth.user_grant_role("root", "root")
        await c.auth.user_add("bench", "benchpw")
        await c.auth.role_add("bench")
        await c.auth.role_grant_permission("bench", "readwrite", "bench/", prefix=True)
        await c.auth.role_grant_permission("bench", "read", "config/", prefix=True)
        await c.auth.user_grant_role("bench", "bench")
        await c.auth.enable()


def run(mode: str, root: Path, duration: float) -> dict[str, tuple[float, float, float]]:
    client = ["--user", "bench:benchpw"] if mode == "on" else []
    lc = LocalCluster(root, cluster_id="authbench")
    lc.start_all()
    out: dict[str, tuple[float, float, float]] = {}
    try:
        wait_leader(lc, (), f"the {mode} cluster")
        if mode == "on":
            asyncio.run(enable_auth([str(e) for e in lc.endpoints()]))
        for name, extra in SHAPES:
            before = cpu_us(lc)
            j = raftkv_bench(lc, duration, [*extra, *client])
            out[name] = (j["ops_per_s"], j["p50_ms"], (cpu_us(lc) - before) / max(1, j["ops"]))
    finally:
        lc.stop_all()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per shape (default 6)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-auth-bench-") as tmp:
        results: dict[str, list[dict[str, tuple[float, float, float]]]] = {"off": [], "on": []}
        for rnd in range(a.rounds):
            for mode in ("off", "on") if rnd % 2 == 0 else ("on", "off"):
                got = run(mode, Path(tmp) / f"{mode}-{rnd}", a.duration)
                results[mode].append(got)
                cells = "  ".join(f"{k} {v[0]:,.0f}/s p50 {v[1]:.2f} ms cpu {v[2]:.0f} µs/op" for k, v in got.items())
                print(f"round {rnd + 1} {mode:3s}: {cells}", flush=True)
        print("medians:")
        med: dict[str, dict[str, list[float]]] = {}
        for mode, runs in results.items():
            med[mode] = {name: [statistics.median(r[name][k] for r in runs) for k in range(3)] for name, _x in SHAPES}
            cells = "  ".join(f"{k} {v[0]:,.0f}/s p50 {v[1]:.2f} ms cpu {v[2]:.0f} µs/op" for k, v in med[mode].items())
            print(f"  {mode:3s}: {cells}")
        for name, _x in SHAPES:
            p, t = med["off"][name], med["on"][name]
            print(f"  {name}: on / off ops/s {t[0] / p[0]:.2f}, p50 {t[1] / p[1]:.2f}, CPU per op {t[2] / p[2]:.2f}")


if __name__ == "__main__":
    main()
