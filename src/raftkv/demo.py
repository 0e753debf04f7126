"""``python -m raftkv.demo`` (``make demo``): a local 3-node cluster of real processes doing real work.

It starts three ``raftkv serve`` processes on 127.0.0.1 (the key-value store, default settings, fsync on),
writes and reads keys, reads one back through the etcd v3 gateway each node serves (what etcdctl and etcd's
client libraries talk to), kills the leader with SIGKILL, measures how long writes are unavailable, checks that
every acknowledged write survived on the other nodes, restarts the killed node and watches it catch up, then
stops everything gracefully. Data goes to a fresh temporary directory (or ``--data-dir``), removed at the end
unless kept.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from raftkv.cli.local import LocalCluster
from raftkv.client import Client, StatusReport, connect
from raftkv.errors import RaftError
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop

console = Console(width=max(100, Console().width))


async def _statuses(client: Client) -> list[StatusReport | tuple[str, str]]:
    return await client.admin.statuses(timeout=0.5)


async def _wait_leader(lc: LocalCluster, ids: list[int], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    async with connect(lc.endpoints(ids), cluster_id="demo") as cluster:
        while time.monotonic() < deadline:
            reports = [r for r in await _statuses(cluster) if isinstance(r, StatusReport)]
            leaders = {r.leader for r in reports}
            if len(reports) == len(ids) and len(leaders) == 1 and (leader := leaders.pop()) is not None:
                return leader
            await asyncio.sleep(0.05)
    raise SystemExit(f"no leader among nodes {ids} within {timeout} s: see the logs in {lc.root}")


def _table(reports: list[StatusReport | tuple[str, str]]) -> Table:
    t = Table(box=None)
    for col in ("node", "endpoint", "role", "term", "commit", "applied"):
        t.add_column(col)
    for r in reports:
        if isinstance(r, StatusReport):
            role = f"[bold green]{r.role}[/]" if r.role == "leader" else r.role
            t.add_row(str(r.id), r.endpoint, role, str(r.term), str(r.commit), str(r.applied))
        else:
            t.add_row("?", r[0], f"[red]down[/] ({r[1]})", "-", "-", "-")
    return t


async def _applied_everywhere(lc: LocalCluster, ids: list[int], acked: dict[bytes, bytes], timeout: float) -> bool:
    """Poll each node's own copy (serializable reads) until it holds every acknowledged write."""
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for i in sorted(pending):
            try:
                async with connect([Address("127.0.0.1", lc.client[i])], cluster_id="demo", timeout=1.0) as c:
                    found = await asyncio.gather(*(c.get(k, serializable=True) for k in acked))
                if all(kv is not None and kv.value == acked[kv.key] for kv in found):
                    pending.discard(i)
            except RaftError:
                pass  # not up yet
        if pending:
            await asyncio.sleep(0.1)
    return not pending


async def run(root: Path, commands: int) -> int:
    async with kj_loop():
        return await _run(root, commands)


async def _run(root: Path, commands: int) -> int:
    lc = LocalCluster(root, cluster_id="demo", etcd=True)
    console.print(f"[bold]raftkv demo[/]: 3 nodes on 127.0.0.1, data in {root}")
    try:
        lc.start_all()
        started = time.monotonic()
        leader = await _wait_leader(lc, lc.ids, 15.0)
        console.print(f"node {leader} elected leader ({time.monotonic() - started:.2f} s after the processes started)")

        acked: dict[bytes, bytes] = {}
        async with connect(lc.endpoints(), cluster_id="demo") as kv:
            t0 = time.monotonic()
            for k in range(commands):
                key, value = f"demo/{k:04d}".encode(), f"value-{k}".encode()
                await kv.put(key, value)
                acked[key] = value
            elapsed = time.monotonic() - t0
            console.print(
                f"wrote {commands} keys one at a time, each fsync'd on a majority before the answer: "
                f"{commands / elapsed:.0f} writes/s, {elapsed / commands * 1000:.2f} ms each"
            )
            r = await kv.range("demo/", prefix=True, count_only=True)
            got = await kv.get("demo/0007")
            console.print(
                f"read back: {r.count} keys under demo/; demo/0007 = {got.value.decode() if got else None!r} "
                f"(linearizable reads: leadership confirmed by a heartbeat round, no log write)"
            )
            console.print(await _through_etcd(lc, b"demo/0007"))
            console.print(_table(await _statuses(kv)))

            console.print(f"[bold red]kill -9[/] the leader (node {leader})")
            lc.procs[leader].kill()
            lc.procs[leader].wait(timeout=5)
            killed_at = time.monotonic()
            await kv.put("demo/after-failover", "yes")
            failover = time.monotonic() - killed_at
            acked[b"demo/after-failover"] = b"yes"
            console.print(f"writes resumed {failover * 1000:.0f} ms after the kill")

        survivors = [i for i in lc.ids if i != leader]
        if not await _applied_everywhere(lc, survivors, acked, 10.0):
            console.print("[bold red]FAILED[/]: an acknowledged write is missing on a surviving node")
            return 1
        console.print(f"all {len(acked)} acknowledged writes are on nodes {survivors}: nothing lost")

        console.print(f"restarting node {leader} on its data dir")
        lc.start(leader)
        if not await _applied_everywhere(lc, lc.ids, acked, 15.0):
            console.print("[bold red]FAILED[/]: the restarted node did not catch up")
            return 1
        console.print(f"node {leader} caught up from its log and the new leader")
        async with connect(lc.endpoints(), cluster_id="demo") as cluster:
            console.print(_table(await _statuses(cluster)))
        console.print("[bold green]OK[/]: stopping the cluster (SIGTERM: graceful, leadership handed over)")
        return 0
    finally:
        lc.stop_all()


async def _through_etcd(lc: LocalCluster, key: bytes) -> str:
    """Read ``key`` through a node's etcd gateway with etcd's own protocol, as etcdctl would."""
    import grpc  # type: ignore[import-untyped]  # noqa: PLC0415 -- only the demo's gRPC step needs it

    from raftkv.kvserver.etcd_api import load_protos  # noqa: PLC0415

    pb, services = load_protos()
    async with grpc.aio.insecure_channel(str(lc.etcd_endpoints()[-1])) as channel:
        got = await services.KVStub(channel).Range(pb.RangeRequest(key=key), timeout=5)
    value = got.kvs[0].value.decode() if got.kvs else None
    return (
        f"etcd v3 gateway: {key.decode()} = {value!r} at etcd revision {got.header.revision} "
        "(etcd counts from 1, raftkv from 0): etcdctl works against these ports; `raftkv cluster up` prints them"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftkv.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, help="keep the cluster's data here (default: a temporary directory)")
    p.add_argument("--commands", type=int, default=200, help="keys to write before the failover")
    args = p.parse_args(argv)
    if args.data_dir is not None:
        if args.data_dir.exists() and any(args.data_dir.iterdir()):
            print(f"raftkv demo: error: --data-dir {args.data_dir} is not empty; give an empty or new directory")
            return 2
        args.data_dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args.data_dir, args.commands))
    root = Path(tempfile.mkdtemp(prefix="raftkv-demo-"))
    try:
        return asyncio.run(run(root, args.commands))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
