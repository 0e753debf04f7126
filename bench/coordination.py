"""Coordination costs on a real 3-node cluster: lock hand-over latency, and 1,000 leases kept alive.

    PYTHONPATH=. .venv/bin/python bench/coordination.py
    PYTHONPATH=. .venv/bin/python bench/coordination.py --handovers 50 --leases 1000 --seconds 10

Three ``raftkv serve`` processes (fsync on, default settings) on loopback.

* **Lock hand-over**: a holder and a waiter (two clients in this process). The holder releases; the latency
  is from just before its release call to the waiter's ``acquire`` returning (the release goes on to revoke the
  holder's lease; the waiter does not wait for that). Median and max over
  ``--handovers`` hand-overs. Target (issue 16): median <= 3 ms.
* **Leases kept alive**: one client grants ``--leases`` leases of 10 s and keeps each alive every third of its
  TTL (the client's ``Lease`` rhythm; the keep-alives of one turn go out in one batch). The leader's CPU over
  ``--seconds`` is compared with the same time idle just before. Target: < 5% of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from raftkv.cli.local import LocalCluster
from raftkv.client import Lock, connect

CLUSTER_ID = "coordbench"


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_leader(lc: LocalCluster) -> int:
    async with connect(lc.endpoints(), cluster_id=CLUSTER_ID, timeout=30.0) as c:
        await c.put("warm-up", "1")
        members = await c.members(timeout=10.0)
        return next(m.id for m in members if m.is_leader)


async def handovers(lc: LocalCluster, n: int) -> list[float]:
    out = []
    async with (
        connect(lc.endpoints(), cluster_id=CLUSTER_ID) as a,
        connect(lc.endpoints(), cluster_id=CLUSTER_ID) as b,
    ):
        holder, waiter = a, b
        held = holder.lock("bench/lock", ttl=10)
        await held.acquire()
        for _ in range(n):
            waiting = waiter.lock("bench/lock", ttl=10)
            acquired: list[float] = []

            async def acquire(lock: Lock = waiting, acquired: list[float] = acquired) -> None:
                await lock.acquire()
                acquired.append(time.perf_counter())

            task = asyncio.ensure_future(acquire())
            await asyncio.sleep(0.05)  # the waiter is queued and watching
            t0 = time.perf_counter()
            await held.release()  # deletes the key, then revokes the holder's lease: the waiter need not wait for that
            await task
            out.append(acquired[0] - t0)
            held, holder, waiter = waiting, waiter, holder
        await held.release()
    return out


async def keep_alive_cost(lc: LocalCluster, leader_pid: int, leases: int, seconds: float) -> tuple[float, float]:
    idle_start = cpu_s(leader_pid)
    await asyncio.sleep(seconds)
    idle = (cpu_s(leader_pid) - idle_start) / seconds
    async with connect(lc.endpoints(), cluster_id=CLUSTER_ID, timeout=30.0) as c:
        ids = [g.id for g in await asyncio.gather(*(c.lease_grant(10) for _ in range(leases)))]
        stop = time.monotonic() + seconds
        start = cpu_s(leader_pid)
        began = time.monotonic()
        while time.monotonic() < stop:
            await asyncio.gather(*(c.lease_keep_alive_once(i) for i in ids))
            await asyncio.sleep(10 / 3)
        busy = (cpu_s(leader_pid) - start) / (time.monotonic() - began)
        await asyncio.gather(*(c.lease_revoke(i) for i in ids))
    return idle, busy


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--handovers", type=int, default=50)
    ap.add_argument("--leases", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-coord-") as tmp:
        lc = LocalCluster(Path(tmp), cluster_id=CLUSTER_ID)
        lc.start_all()
        try:
            leader = await wait_leader(lc)
            took = await handovers(lc, args.handovers)
            ms = [t * 1000 for t in took]
            print(
                f"lock hand-over ({len(ms)}): median {statistics.median(ms):.2f} ms, "
                f"p90 {sorted(ms)[int(len(ms) * 0.9)]:.2f} ms, max {max(ms):.2f} ms"
            )
            leader = await wait_leader(lc)
            idle, busy = await keep_alive_cost(lc, lc.procs[leader].pid, args.leases, args.seconds)
            print(
                f"{args.leases} leases kept alive: the leader used {busy * 100:.1f}% of a core "
                f"({idle * 100:.1f}% idle just before): {(busy - idle) * 100:.1f}% for the leases"
            )
        finally:
            lc.stop_all()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
