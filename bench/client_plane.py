"""The client's hot path two ways: ``Kv.execute`` as a Cap'n Proto call and as a client data plane frame.

    PYTHONPATH=. .venv/bin/python bench/client_plane.py [--calls 2000] [--rounds 3] [--batch 1,64]

One ``raftkv serve`` node (a one-node cluster, fsync on) and one client connection in this process. Each call
is one ``execute`` batch of ``--batch`` serializable point reads of one key: the node answers from its own
state, so no Raft round and no disk is in the way and what is measured is the client plane alone (client
encode, the kernel, the node's decode and dispatch, its answer). The two ways run on the same connection,
interleaved in blocks of 100 calls over ``--rounds`` rounds, so that the machine's drift hits both alike.
Prints, per way and batch size: the round trip's median and p90, and the CPU the node spent per call
(from ``/proc``). The node serves both ways, so the ratio is the figure to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from raftkv.cli.local import LocalCluster
from raftkv.client import connect
from raftkv.client.connection import Connection
from raftkv.kv.commands import Range, encode_command
from raftkv.transport.kjloop import kj_loop

CLUSTER_ID = "planebench"
BLOCK = 100


@dataclass(frozen=True)
class Read:
    command: bytes
    serializable: bool = True


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(lc: LocalCluster, calls: int, rounds: int, batches: list[int]) -> None:
    async with connect(lc.endpoints(), cluster_id=CLUSTER_ID, timeout=30.0) as c:
        await c.put("k", "v" * 100)  # also waits for the node to lead
    async with kj_loop():
        await compare(lc, calls, rounds, batches)


async def compare(lc: LocalCluster, calls: int, rounds: int, batches: list[int]) -> None:
    conn = Connection(lc.endpoints()[0], CLUSTER_ID)
    await conn.open(5.0)
    pid = lc.procs[1].pid
    ways = {"capnp call": conn.execute_rpc, "frame": conn.execute}
    try:
        for batch in batches:
            requests = [Read(encode_command(Range(b"k")))] * batch
            for way in ways.values():  # warm both up
                for _ in range(50):
                    await way(requests, 5.0)
            rtts: dict[str, list[float]] = {name: [] for name in ways}
            cpu: dict[str, float] = dict.fromkeys(ways, 0.0)
            for _ in range(rounds):
                for _ in range(max(1, calls // BLOCK)):
                    for name, way in ways.items():
                        before = cpu_s(pid)
                        for _ in range(BLOCK):
                            t0 = time.perf_counter()
                            await way(requests, 5.0)
                            rtts[name].append(time.perf_counter() - t0)
                        cpu[name] += cpu_s(pid) - before
            medians = {}
            for name, xs in rtts.items():
                xs.sort()
                medians[name] = statistics.median(xs)
                print(
                    f"batch {batch:>4}  {name:<10}  round trip p50 {medians[name] * 1e6:7.1f} µs  "
                    f"p90 {xs[int(len(xs) * 0.9)] * 1e6:7.1f} µs   node CPU {cpu[name] / len(xs) * 1e6:6.1f} µs/call"
                )
            print(f"batch {batch:>4}  frame / capnp call round trip: {medians['frame'] / medians['capnp call']:.2f}")
    finally:
        conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls per way and round (default 2000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", default="1,64", help="commands per call, one run each (default 1,64)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-plane-") as tmp:
        lc = LocalCluster(Path(tmp), n=1, cluster_id=CLUSTER_ID)
        lc.start_all()
        try:
            await run(lc, args.calls, args.rounds, [int(b) for b in args.batch.split(",")])
        finally:
            lc.stop_all()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
