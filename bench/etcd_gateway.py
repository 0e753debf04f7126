"""The etcd gateway against etcd, driven by the very same gRPC client code, and against raftkv's own protocol.

    PYTHONPATH=. .venv/bin/python bench/etcd_gateway.py [--rounds 3] [--duration 5]

Four rows per round, side by side, in an order that rotates from round to round: etcd 3.4 (Debian's
``/usr/bin/etcd``, fsync on), raftkv with ``--listen-etcd`` on each node (fsync on) driven through the gateway,
the same raftkv cluster driven through its own client (``raftkv.connect``), and the floor: three processes whose
grpcio server answers every Put at once and does nothing else (the most any Python gRPC server can do with this
client on this machine). The gRPC rows use one ``grpc.aio`` channel per member and the etcd3aio package's stubs
(what bench/compare.py uses for etcd), spread over the three members the way etcd's clients spread their calls;
the raftkv row uses its own client. Shapes: puts one at a time (p50, p99) and puts at 64 in flight (ops/s), with
the CPU the servers and the client spent per put at 64 in flight. Issue 18's aim: the gateway at least 1.5x
etcd's puts at 64 in flight, and its added latency over raftkv's own protocol quoted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.etcd_local import etcd_cluster, etcd_leader, stop_all, stubs

from raftkv.cli.local import free_ports
from raftkv.client import connect

VALUE = b"v" * 100
SHAPES = (("sequential", 1), ("put@64", 64))


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have spent so far."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def drive(
    op: Callable[[int], Awaitable[None]], inflight: int, duration: float, pids: list[int] | None = None
) -> dict[str, float]:
    """Run ``op`` from ``inflight`` workers for ``duration`` s: ops/s, p50/p99 latency and, for the processes
    ``pids`` and this one, CPU µs per op."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() >= stop_at:
                return
            t0 = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t0)

    servers0, client0, t0 = cpu_s(pids or []), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed = time.perf_counter() - t0
    servers, client = cpu_s(pids or []) - servers0, time.process_time() - client0
    lat = sorted(latencies)
    return {
        "ops_per_s": len(lat) / elapsed,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
        "server_us": servers * 1e6 / len(lat),
        "client_us": client * 1e6 / len(lat),
    }


async def grpc_rows(ports: list[int], duration: float, pids: list[int]) -> dict[str, dict[str, float]]:
    grpc_aio: Any = __import__("grpc.aio", fromlist=["aio"])
    pb = stubs()
    channels = [grpc_aio.insecure_channel(f"127.0.0.1:{p}") for p in ports]
    kvs = [pb.grpc.KVStub(c) for c in channels]
    try:
        for kv in kvs:  # each member up and answering (the floor's servers may still be starting)
            await kv.Put(pb.PutRequest(key=b"warm", value=VALUE), timeout=30, wait_for_ready=True)

        async def put(i: int) -> None:
            await kvs[i % len(kvs)].Put(pb.PutRequest(key=b"k%d" % (i % 1000), value=VALUE), timeout=10)

        out = {}
        for shape, inflight in SHAPES:
            await drive(put, inflight, 1.0)  # warm-up at the same concurrency
            out[shape] = await drive(put, inflight, duration, pids)
        return out
    finally:
        for c in channels:
            await c.close()


async def raftkv_rows(endpoints: list[str], duration: float, pids: list[int]) -> dict[str, dict[str, float]]:
    async with connect(endpoints, timeout=10.0) as c:
        await c.put("warm", VALUE)

        async def put(i: int) -> None:
            await c.put(b"k%d" % (i % 1000), VALUE)

        out = {}
        for shape, inflight in SHAPES:
            await drive(put, inflight, 1.0)
            out[shape] = await drive(put, inflight, duration, pids)
        return out


def floor_servers() -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """Three processes, each a grpcio asyncio server whose Put answers at once (``--serve-floor PORT``)."""
    ports = free_ports(3)
    cmd = [sys.executable, "-m", "bench.etcd_gateway", "--serve-floor"]
    procs = [subprocess.Popen([*cmd, str(p)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    return procs, ports


def serve_floor(port: int) -> None:
    # Imported here, in the floor's own process: the bench's process holds etcd3aio's etcdserverpb descriptors,
    # and one process can hold only one set.
    import grpc  # type: ignore[import-untyped]

    from raftkv.kvserver.etcd_api import load_protos

    pb, services = load_protos()
    answer = pb.PutResponse(header=pb.ResponseHeader(cluster_id=1, member_id=1, revision=2, raft_term=1))

    class KV(services.KVServicer):  # type: ignore[misc, name-defined]
        async def Put(self, request: Any, context: Any) -> Any:  # noqa: N802
            return answer

    async def run() -> None:
        server = grpc.aio.server()
        services.add_KVServicer_to_server(KV(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(run())


def raftkv_cluster(root: Path) -> tuple[list[subprocess.Popen[bytes]], list[int], list[str]]:
    ports = free_ports(9)
    peer, client, etcd = ports[:3], ports[3:6], ports[6:]
    peers = ",".join(f"{i + 1}=127.0.0.1:{peer[i]}" for i in range(3))
    procs = []
    for i in range(3):
        cmd = [
            sys.executable, "-m", "raftkv.cli", "serve", "--id", str(i + 1), "--cluster-id", "gwbench",
            "--data-dir", str(root / f"n{i + 1}"), "--listen-peer", f"127.0.0.1:{peer[i]}",
            "--listen-client", f"127.0.0.1:{client[i]}", "--listen-etcd", f"127.0.0.1:{etcd[i]}",
            "--peers", peers, "--log-level", "warning",
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs, etcd, [f"127.0.0.1:{p}" for p in client]


async def one_round(kind: str, root: Path, duration: float) -> dict[str, dict[str, float]]:
    if kind == "etcd":
        procs, ports = etcd_cluster("/usr/bin/etcd", root)
        try:
            _pb, channel = await etcd_leader(ports)
            await channel.close()
            return await grpc_rows(ports, duration, [p.pid for p in procs])
        finally:
            stop_all(procs)
    if kind == "floor":
        procs, ports = floor_servers()
        try:
            return await grpc_rows(ports, duration, [p.pid for p in procs])  # its warm-up calls wait for them
        finally:
            stop_all(procs)
    procs, gw_ports, endpoints = raftkv_cluster(root)
    pids = [p.pid for p in procs]
    try:
        async with connect(endpoints, timeout=30.0) as c:
            await c.put("up", "1")  # a leader, and the gateways listening by now
        if kind == "gateway":
            return await grpc_rows(gw_ports, duration, pids)
        return await raftkv_rows(endpoints, duration, pids)
    finally:
        stop_all(procs)


def _cells(shapes: dict[str, dict[str, float]]) -> str:
    cells = [f"{s} {v['ops_per_s']:,.0f}/s p50 {v['p50_ms']:.2f} p99 {v['p99_ms']:.2f} ms" for s, v in shapes.items()]
    at64 = shapes["put@64"]
    cells.append(f"(at 64: servers {at64['server_us']:,.0f} + client {at64['client_us']:,.0f} µs CPU per put)")
    return "  ".join(cells)


async def amain(rounds: int, duration: float) -> None:
    kinds = ["etcd", "gateway", "raftkv", "floor"]
    results: dict[str, list[dict[str, dict[str, float]]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="raftkv-gateway-bench-") as tmp:
        for rnd in range(rounds):
            order = kinds[rnd % len(kinds) :] + kinds[: rnd % len(kinds)]
            for kind in order:
                got = await one_round(kind, Path(tmp) / f"{kind}-{rnd}", duration)
                results[kind].append(got)
                print(f"round {rnd + 1} {kind:8s}: {_cells(got)}", flush=True)
    metrics = ("ops_per_s", "p50_ms", "p99_ms", "server_us", "client_us")
    med = {
        k: {s: {m: statistics.median(r[s][m] for r in runs) for m in metrics} for s, _n in SHAPES}
        for k, runs in results.items()
    }
    print("medians:")
    for k, shapes in med.items():
        print(f"  {k:8s}: {_cells(shapes)}")
    g, e, r, f = med["gateway"], med["etcd"], med["raftkv"], med["floor"]
    print(f"  put@64: gateway / etcd {g['put@64']['ops_per_s'] / e['put@64']['ops_per_s']:.2f}x (aim >= 1.5x)")
    print(f"  put@64: floor / etcd {f['put@64']['ops_per_s'] / e['put@64']['ops_per_s']:.2f}x (a server doing nothing)")
    added50 = g["sequential"]["p50_ms"] - r["sequential"]["p50_ms"]
    added99 = g["sequential"]["p99_ms"] - r["sequential"]["p99_ms"]
    print(f"  sequential: the gateway adds {added50:+.2f} ms p50, {added99:+.2f} ms p99 over raftkv's own protocol")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per shape (default 5)")
    ap.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_floor is not None:
        serve_floor(a.serve_floor)
        return
    asyncio.run(amain(a.rounds, a.duration))


if __name__ == "__main__":
    main()
