"""Cluster benchmark: proposals/s and commit latency on a real 3-node cluster (fsync on), and failover time.

    python bench/cluster.py [--duration 5] [--inflight 1,64,512] [--failover-trials 10]

Throughput: the leader runs in this process (the embedding API, ``RaftNode.propose``); the two followers are
``raftkv serve`` processes. N coroutines keep N proposals of 100 bytes in flight for ``--duration`` seconds.
Latency is from ``propose`` to the state machine's result on the leader (committed on a majority, fsync'd).

Failover: three ``raftkv serve`` processes (the KV store); kill -9 the leader, then time until a client's put
succeeds on the new leader (``raftkv.Client`` retrying by itself). Default timeouts (election 150–300 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.runtime.cluster import free_ports

from raftkv.client import StatusReport, connect
from raftkv.raft.types import NodeId
from raftkv.runtime.config import NodeConfig
from raftkv.runtime.node import RaftNode
from raftkv.runtime.statemachine import CommandLog
from raftkv.transport.address import Address


def serve_cmd(i: int, root: Path, peer: dict[int, int], client: dict[int, int], *extra: str) -> list[str]:
    peers = ",".join(f"{j}=127.0.0.1:{peer[j]}" for j in sorted(peer))
    return [
        sys.executable, "-m", "raftkv.cli", "serve", "--id", str(i), "--cluster-id", "bench",
        "--data-dir", str(root / f"n{i}"), "--listen-peer", f"127.0.0.1:{peer[i]}",
        "--listen-client", f"127.0.0.1:{client[i]}", "--peers", peers, "--log-level", "warning", *extra,
    ]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def throughput(root: Path, duration: float, inflights: list[int]) -> list[tuple[int, float, float, float]]:
    ports = free_ports(6)
    peer = {1: ports[0], 2: ports[1], 3: ports[2]}
    client = {1: ports[3], 2: ports[4], 3: ports[5]}
    # The followers wait longer before campaigning, so the in-process node 1 becomes the leader.
    procs = [
        subprocess.Popen(serve_cmd(i, root, peer, client, "--election-ticks", "60"), stderr=subprocess.DEVNULL)
        for i in (2, 3)
    ]
    cfg = NodeConfig(
        id=NodeId(1),
        data_dir=root / "n1",
        listen_peer=Address("127.0.0.1", peer[1]),
        peers={NodeId(j): Address("127.0.0.1", peer[j]) for j in peer},
        cluster_id="bench",
    )
    rows = []
    try:
        async with RaftNode(cfg, CommandLog()) as node:
            while node.core is None or node.core.role.value != "leader":
                await asyncio.sleep(0.05)
            payload = bytes(100)
            await node.propose(payload)
            for n in inflights:
                latencies: list[float] = []
                stop_at = time.perf_counter() + duration

                async def worker(stop_at: float = stop_at, latencies: list[float] = latencies) -> None:
                    while time.perf_counter() < stop_at:
                        t0 = time.perf_counter()
                        await node.propose(payload, timeout=10)
                        latencies.append(time.perf_counter() - t0)

                cpu0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(n)))
                elapsed = time.perf_counter() - t0
                cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                cpu = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime) / elapsed
                rate = len(latencies) / elapsed
                rows.append((n, rate, pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000))
                print(
                    f"  {n:>4} in flight: {rate:>8,.0f} proposals/s   p50 {rows[-1][2]:6.2f} ms   "
                    f"p99 {rows[-1][3]:6.2f} ms   (leader+load process CPU {cpu * 100:.0f}%)",
                    flush=True,
                )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=10)
    return rows


async def failover(root: Path, trials: int) -> list[float]:
    ports = free_ports(6)
    peer = {1: ports[0], 2: ports[1], 3: ports[2]}
    client = {1: ports[3], 2: ports[4], 3: ports[5]}
    procs = {i: subprocess.Popen(serve_cmd(i, root, peer, client), stderr=subprocess.DEVNULL) for i in peer}
    endpoints = [Address("127.0.0.1", client[i]) for i in peer]
    times = []
    try:
        async with connect(endpoints, cluster_id="bench", timeout=5.0) as kv:
            for trial in range(trials):
                leader = None
                while leader is None:
                    reports = [r for r in await kv.admin.statuses(0.5) if isinstance(r, StatusReport)]
                    leaders = {r.leader for r in reports}
                    if len(reports) == 3 and len(leaders) == 1:
                        leader = leaders.pop()
                    else:
                        await asyncio.sleep(0.05)
                await kv.put(f"warm{trial}", "x")
                await asyncio.sleep(0.2 + 0.05 * (trial % 3))  # land the kill at varied heartbeat phases
                procs[leader].kill()
                procs[leader].wait()
                killed = time.perf_counter()
                await kv.put(f"after{trial}", "x")  # the client retries until a leader accepts it
                times.append(time.perf_counter() - killed)
                print(f"  trial {trial + 1}: writes resumed {times[-1] * 1000:.0f} ms after kill -9", flush=True)
                procs[leader] = subprocess.Popen(serve_cmd(leader, root, peer, client), stderr=subprocess.DEVNULL)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(timeout=10)
    return times


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--inflight", default="1,64,512")
    ap.add_argument("--failover-trials", type=int, default=10)
    args = ap.parse_args()
    print(f"bench/cluster.py on {os.cpu_count()} cores; 3 nodes on 127.0.0.1, fsync on, 100-byte commands")
    with tempfile.TemporaryDirectory() as tmp:
        print("throughput (leader embedded in this process, two followers as processes):")
        await throughput(Path(tmp) / "t", args.duration, [int(x) for x in args.inflight.split(",")])
    if args.failover_trials:
        with tempfile.TemporaryDirectory() as tmp:
            print("failover (three processes, kill -9 the leader):")
            times = await failover(Path(tmp), args.failover_trials)
            print(
                f"  failover over {len(times)} trials: median {statistics.median(times) * 1000:.0f} ms, "
                f"max {max(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
