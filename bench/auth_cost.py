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
import tempfile
from pathlib import Path

from bench.local_runs import bench_shapes, interleaved, wait_leader

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
    try:
        wait_leader(lc, (), f"the {mode} cluster")
        if mode == "on":
            asyncio.run(enable_auth([str(e) for e in lc.endpoints()]))
        return bench_shapes(lc, SHAPES, duration, client)
    finally:
        lc.stop_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per shape (default 6)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-auth-bench-") as tmp:
        shapes = [name for name, _x in SHAPES]
        interleaved(
            ("off", "on"), a.rounds, shapes, lambda mode, rnd: run(mode, Path(tmp) / f"{mode}-{rnd}", a.duration)
        )


if __name__ == "__main__":
    main()
