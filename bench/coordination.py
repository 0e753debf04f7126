"""Coordination costs on a real 3-node cluster: lock hand-over latency, and 1,000 leases kept alive.

    PYTHONPATH=. .venv/bin/python bench/coordination.py
    PYTHONPATH=. .venv/bin/python bench/coordination.py --handovers 50 --leases 1000 --seconds 10

Three ``raftkv serve`` processes (fsync on, default settings) on loopback.

* **Lock hand-over**: a holder and a waiter (two clients in this process). The holder releases; the latency
  is from just before its release call to the waiter's ``acquire`` returning (the release goes on to revoke the
  holder's lease; the waiter does not wait for that). Median and max over
  ``--handovers`` hand-overs. Target (issue 16): median <= 3 ms. Then etcd's side of the same step, when an
  etcd binary is on PATH (``--no-etcd`` skips it): three etcd 3.4 members on this machine, a holder's key
  deleted after 50 ms, until the waiter's watch has the event (``bench/etcd_local.py``).
* **Leases kept alive**: one client grants ``--leases`` leases of 10 s and keeps each alive every third of its
  TTL (the client's ``Lease`` rhythm; the keep-alives of one turn go out in one batch). The leader's CPU over
  ``--seconds`` is compared with the same time idle just before. Target: < 5% of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.etcd_local import etcd_cluster, etcd_leader, stop_all

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


async def etcd_handovers(etcd: str, root: Path, n: int) -> list[float]:
    """etcd's side of the same step, its concurrency package's shape: the waiter watches the holder's key
    (etcd's lock waits on the key with the next-lower create revision); the holder deletes it after 50 ms; the
    time from the delete's start until the waiter's watch has the DELETE event. etcd's ``Lock`` returns right
    after that event (it re-reads only when another key is ahead), so this is its hand-over less ~0.1 ms."""
    procs, ports = etcd_cluster(etcd, root)
    try:
        pb, channel = await etcd_leader(ports)
        kv, watch = pb.grpc.KVStub(channel), pb.grpc.WatchStub(channel)
        key = b"bench/lock/holder"
        stream = watch.Watch()
        await stream.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key)))
        assert (await stream.read()).created
        out = []
        for _ in range(n):
            await kv.Put(pb.PutRequest(key=key, value=b"held"), timeout=10)
            while not any(e.type == 0 for e in (await stream.read()).events):  # the PUT event
                pass
            await asyncio.sleep(0.05)  # the holder holds; everything goes idle

            async def deleted() -> float:
                while not any(e.type == 1 for e in (await stream.read()).events):
                    pass
                return time.perf_counter()

            waiter = asyncio.ensure_future(deleted())
            await asyncio.sleep(0)
            t0 = time.perf_counter()
            await kv.DeleteRange(pb.DeleteRangeRequest(key=key), timeout=10)
            out.append(await asyncio.wait_for(waiter, 10) - t0)
        stream.cancel()
        await channel.close()
        return out
    finally:
        stop_all(procs)


def quote(what: str, took: list[float]) -> str:
    ms = sorted(t * 1000 for t in took)
    return (
        f"{what} ({len(ms)}): median {statistics.median(ms):.2f} ms, p90 {ms[int(len(ms) * 0.9)]:.2f} ms, "
        f"max {ms[-1]:.2f} ms"
    )


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
    ap.add_argument("--no-etcd", action="store_true", help="skip etcd's side of the hand-over")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-coord-") as tmp:
        lc = LocalCluster(Path(tmp), cluster_id=CLUSTER_ID)
        lc.start_all()
        try:
            leader = await wait_leader(lc)
            print(quote("lock hand-over", await handovers(lc, args.handovers)), flush=True)
            etcd = shutil.which("etcd")
            if etcd and not args.no_etcd:
                took = await etcd_handovers(etcd, Path(tmp) / "etcd", args.handovers)
                print(quote("etcd, the same step (delete, then the waiter's watch event)", took), flush=True)
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
