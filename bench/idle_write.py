"""A write after idle time, raftkv and etcd side by side: what a lock hand-over or a configuration write pays.

    PYTHONPATH=. .venv/bin/python bench/idle_write.py [--puts 200] [--idle-ms 0,5,50]

Three ``raftkv serve`` processes and three etcd 3.4 members (``/usr/bin/etcd``, Debian's ``etcd-server``; the
script says so and measures raftkv alone without it), fsync on for both, all on this machine. One client per
system in this process: raftkv's own, and etcd's gRPC API through ``grpc.aio`` with the etcd3aio package's
stubs (the client ``bench/compare.py`` uses). Each put waits ``--idle-ms`` after the previous one answered.
The systems alternate in blocks of 20 puts, so the machine's drift hits both alike. Prints each system's
median and p90 per pause, and raftkv's median over etcd's.

Why it matters: on this machine every process wake-up and every fsync costs about twice as much after ~50 ms
of idle time (docs/benchmarks.md, "Sequential latency"), and a lock hand-over is one write after the holder's
idle time. This shows how much of that is the machine, by running etcd through the same pauses.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.etcd_local import etcd_cluster, etcd_leader, stop_all

from raftkv.cli.local import LocalCluster
from raftkv.client import connect

BLOCK = 20
VALUE = b"v" * 100


async def run(args: argparse.Namespace, root: Path) -> None:
    idles = [float(x) for x in args.idle_ms.split(",")]
    lc = LocalCluster(root / "raftkv", cluster_id="idlebench")
    lc.start_all()
    etcd = shutil.which("etcd") or ""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with connect(lc.endpoints(), cluster_id="idlebench", timeout=30.0) as c:
            await c.put("warm", "1")

            async def raftkv_put(i: int) -> None:
                await c.put(f"k{i % 100}", VALUE)

            systems: dict[str, Callable[[int], Awaitable[None]]] = {"raftkv": raftkv_put}
            close_etcd = None
            if etcd:
                (root / "etcd").mkdir()
                procs, ports = etcd_cluster(etcd, root / "etcd")
                pb, channel = await etcd_leader(ports)
                close_etcd = channel.close
                kv = pb.grpc.KVStub(channel)

                async def etcd_put(i: int) -> None:
                    await kv.Put(pb.PutRequest(key=f"k{i % 100}".encode(), value=VALUE), timeout=10)

                systems["etcd"] = etcd_put
            else:
                print("no etcd binary on PATH (Debian: apt install etcd-server): raftkv alone")
            try:
                for idle in idles:
                    took: dict[str, list[float]] = {name: [] for name in systems}
                    for block in range(max(1, args.puts // BLOCK)):
                        for name, put in systems.items():
                            for k in range(BLOCK):
                                await asyncio.sleep(idle / 1000)
                                t0 = time.perf_counter()
                                await put(block * BLOCK + k)
                                took[name].append((time.perf_counter() - t0) * 1000)
                    line = [f"idle {idle:4g} ms:"]
                    for name, xs in took.items():
                        xs.sort()
                        line.append(f"{name} p50 {statistics.median(xs):.2f} ms p90 {xs[int(len(xs) * 0.9)]:.2f} ms")
                    if "etcd" in took:
                        ratio = statistics.median(took["raftkv"]) / statistics.median(took["etcd"])
                        line.append(f"raftkv/etcd {ratio:.2f}")
                    print("  ".join(line), flush=True)
            finally:
                if close_etcd is not None:
                    await close_etcd()
    finally:
        lc.stop_all()
        stop_all(procs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--puts", type=int, default=200, help="puts per system and pause (default 200)")
    ap.add_argument("--idle-ms", default="0,5,50", help="pauses before each put (default 0,5,50)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-idle-") as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
