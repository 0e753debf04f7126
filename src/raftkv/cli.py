"""The ``raftkv`` command: ``serve`` a node, and ``status``, ``ping``, ``propose`` against a running cluster.

Exit codes scripts can rely on: 0 success; 1 the operation failed (unreachable, no leader, a node failure);
2 bad usage or configuration (one line on stderr says what and how to fix it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from raftkv.errors import RaftError
from raftkv.transport.address import Address, AddressError

ENDPOINTS_ENV = "RAFTKV_ENDPOINTS"
log = logging.getLogger("raftkv.cli")


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"raftkv: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raftkv")
def main() -> None:
    """raftkv: a Raft-replicated store. Start nodes with `serve`; inspect them with `status`."""


# --- serve ----------------------------------------------------------------------------------------------------


@main.command()
@click.option("--id", "id_", type=int, help="This node's id (a positive integer, unique in the cluster).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where this node keeps its log and snapshots.")
@click.option("--listen-peer", metavar="HOST:PORT", help="Address for the other nodes.")
@click.option("--listen-client", metavar="HOST:PORT", help="Address for clients (status, ping, propose).")
@click.option("--peers", metavar="ID=HOST:PORT,...", help="Every member and where THIS node reaches its peer port.")
@click.option("--cluster-id", metavar="NAME", help="Name of the cluster (default 'raftkv'); nodes refuse others.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file with the same settings.")
@click.option("--listen-metrics", metavar="HOST:PORT", help="Serve Prometheus /metrics here.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None)
@click.option("--tick-ms", type=int, default=None, help="Tick length (default 10 ms).")
@click.option("--election-ticks", type=int, default=None, help="Minimum election timeout in ticks (default 15).")
@click.option("--heartbeat-ticks", type=int, default=None, help="Heartbeat interval in ticks (default 5).")
@click.option(
    "--snapshot-entries", type=int, default=None, help="Snapshot and compact every N applied entries (10000; 0: off)."
)
@click.option("--snapshot-trailing", type=int, default=None, help="Entries kept below a snapshot (default 1000).")
@click.option("--snapshot-bytes", type=int, default=None, help="Also snapshot after this many bytes (64 MiB; 0: off).")
@click.option(
    "--snapshot-growth",
    type=float,
    default=None,
    help="Snapshot only once the commands since the last one reach this fraction of its size (0.5; 0: off).",
)
@click.option("--wal-segment-bytes", type=int, default=None, help="WAL segment file size (default 64 MiB).")
@click.option(
    "--state-machine",
    type=click.Choice(["kv", "commandlog", "dict"]),
    default="kv",
    show_default=True,
    help="What to replicate: the key-value store (LMDB in DATA_DIR/kv), a bare command log, or an in-memory "
    "dict of put commands (the last two for benchmarks).",
)
def serve(config_file: Path | None, id_: int | None, state_machine: str, **options: Any) -> None:
    """Run one node until SIGTERM or SIGINT (graceful stop within 2 s, handing leadership over)."""
    from raftkv.errors import ConfigError
    from raftkv.runtime.config import build_config
    from raftkv.runtime.logs import setup_logging
    from raftkv.storage import DataDir

    try:
        cfg = build_config({"id": id_, **options}, config_file)
        cfg.validate()
        DataDir(cfg.data_dir).claim(cfg.cluster_id, cfg.id)
    except ConfigError as e:
        _fail(str(e))
    setup_logging(cfg.log_level, cfg.log_format)
    sys.exit(asyncio.run(_serve(cfg, state_machine)))


async def _serve(cfg: Any, kind: Any) -> int:
    from raftkv.errors import ConfigError, StorageError
    from raftkv.kvserver import KVServer

    server = KVServer(cfg, state_machine=kind, check_ports=False)
    try:
        await server.start()
    except ConfigError as e:
        _fail(str(e))
    except StorageError as e:
        _fail(f"cannot open the data dir: {e}", code=1)
    return await server.serve_until_signal()


# --- client-side commands -----------------------------------------------------------------------------------


def _endpoints(value: str | None) -> list[Address]:
    text = value or os.environ.get(ENDPOINTS_ENV, "")
    if not text:
        _fail(f"no endpoints: pass --endpoints HOST:PORT,... or set {ENDPOINTS_ENV}")
    try:
        return [Address.parse(p, "endpoint") for p in text.split(",") if p.strip()]
    except AddressError as e:
        _fail(str(e))


_endpoints_option = click.option(
    "--endpoints", metavar="HOST:PORT,...", help=f"Client addresses of the nodes (or ${ENDPOINTS_ENV})."
)
_timeout_option = click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds per call.")


@main.command()
@_endpoints_option
@click.option("--json", "as_json", is_flag=True, help="One JSON list, one object per endpoint.")
@_timeout_option
def status(endpoints: str | None, as_json: bool, timeout: float) -> None:
    """Show each node's role, term, leader and log positions."""
    from raftkv.client import StatusReport, connect

    addrs = _endpoints(endpoints)

    async def run() -> list[StatusReport | tuple[str, str]]:
        async with connect(addrs) as client:
            return await client.admin.statuses(timeout)

    results = asyncio.run(run())
    if as_json:
        out = [r.to_json() if isinstance(r, StatusReport) else {"endpoint": r[0], "error": r[1]} for r in results]
        click.echo(json.dumps(out, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None)
        for col in ("endpoint", "id", "role", "term", "leader", "commit", "applied", "last index", "peers up"):
            table.add_column(col, no_wrap=True)
        for r in results:
            if isinstance(r, StatusReport):
                up = sum(1 for p in r.peers.values() if p.get("connected"))
                role = f"[bold green]{r.role}[/]" if r.role == "leader" else r.role
                table.add_row(
                    r.endpoint,
                    str(r.id),
                    role,
                    str(r.term),
                    str(r.leader or "-"),
                    str(r.commit),
                    str(r.applied),
                    str(r.last_index),
                    f"{up}/{len(r.peers)}",
                )
            else:
                table.add_row(r[0], "-", f"[red]unreachable: {r[1]}[/]", *["-"] * 6)
        Console(width=max(120, Console().width)).print(table)
    sys.exit(0 if all(isinstance(r, StatusReport) for r in results) else 1)


@main.command()
@_endpoints_option
@_timeout_option
def ping(endpoints: str | None, timeout: float) -> None:
    """Echo a message through each node (the seed's ping) and show the round trip."""
    from raftkv.client import connect, explain

    addrs = _endpoints(endpoints)

    async def run() -> bool:
        ok = True
        async with connect(addrs, timeout=timeout) as client:
            for addr in addrs:
                try:
                    node, term, rtt = await client.admin.ping(addr, timeout)
                    click.echo(f"{addr}: node {node}, term {term}, {rtt * 1000:.2f} ms")
                except Exception as e:  # report every endpoint, whatever went wrong with one
                    click.echo(f"{addr}: {explain(e)}")
                    ok = False
        return ok

    sys.exit(0 if asyncio.run(run()) else 1)


# --- key-value commands ---------------------------------------------------------------------------------------


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


def _kv_json(kv: Any) -> dict[str, Any]:
    return {
        "key": _text(kv.key),
        "value": _text(kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    }


def _kv_call(endpoints: str | None, timeout: float, fn: Any) -> Any:
    """Run ``fn(client)`` against the cluster; turn an unreachable cluster into one helpful line, exit 1."""
    from raftkv.client import connect
    from raftkv.errors import Unavailable

    addrs = _endpoints(endpoints)

    async def run() -> Any:
        async with connect(addrs, timeout=timeout) as client:
            return await fn(client)

    try:
        return asyncio.run(run())
    except Unavailable:
        shown = ",".join(map(str, addrs))
        _fail(f"no leader reachable at {shown}: is the cluster running? try raftkv status", code=1)
    except RaftError as e:
        _fail(str(e), code=1)


_json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
_kv_timeout = click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds, retries included.")


@main.command()
@_endpoints_option
@click.argument("key")
@click.argument("value")
@_json_option
@_kv_timeout
def put(endpoints: str | None, key: str, value: str, as_json: bool, timeout: float) -> None:
    """Set KEY to VALUE."""

    async def op(c: Any) -> Any:
        return await c.put(key, value, prev_kv=True)

    r = _kv_call(endpoints, timeout, op)
    if as_json:
        prev = _kv_json(r.prev_kv) if r.prev_kv else None
        click.echo(json.dumps({"revision": r.revision, "prev_kv": prev}))
    else:
        click.echo(f"OK (revision {r.revision})")


@main.command()
@_endpoints_option
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Every key starting with KEY (printed as key, then value, per line).")
@click.option("--serializable", is_flag=True, help="Read this node's local copy (faster, possibly stale).")
@click.option("--limit", type=int, default=0, help="At most this many keys (with --prefix).")
@_json_option
@_kv_timeout
def get(
    endpoints: str | None, key: str, prefix: bool, serializable: bool, limit: int, as_json: bool, timeout: float
) -> None:
    """Print KEY's value (exit code 1 when it does not exist)."""

    async def op(c: Any) -> Any:
        return await c.range(key, prefix=prefix, limit=limit, serializable=serializable)

    r = _kv_call(endpoints, timeout, op)
    if as_json:
        click.echo(json.dumps({"kvs": [_kv_json(kv) for kv in r.kvs], "count": r.count, "revision": r.revision}))
    elif prefix:
        for kv in r.kvs:
            click.echo(_text(kv.key))
            click.echo(_text(kv.value))
    elif r.kvs:
        click.echo(_text(r.kvs[0].value))
    sys.exit(0 if r.kvs else 1)


@main.command(name="del")
@_endpoints_option
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Delete every key starting with KEY.")
@_json_option
@_kv_timeout
def delete(endpoints: str | None, key: str, prefix: bool, as_json: bool, timeout: float) -> None:
    """Delete KEY (or a prefix); print how many keys were deleted."""

    async def op(c: Any) -> Any:
        return await c.delete(key, prefix=prefix)

    r = _kv_call(endpoints, timeout, op)
    click.echo(json.dumps({"deleted": r.deleted, "revision": r.revision}) if as_json else str(r.deleted))


@main.command()
@_endpoints_option
@_json_option
@_kv_timeout
def txn(endpoints: str | None, as_json: bool, timeout: float) -> None:
    """Run a transaction read as JSON from stdin; prints SUCCESS or FAILURE and the branch's results.

    \b
    {"compare": [{"key": "k", "target": "value", "op": "=", "value": "v"}],
     "success": [{"put": {"key": "k", "value": "w"}}, {"delete": {"key": "p/", "prefix": true}}],
     "failure": [{"get": {"key": "k"}}]}
    target: value | version | create | mod;  op: = != < >  (version/create/mod compare integers)
    """
    try:
        spec = json.loads(sys.stdin.read())
        compare, success, failure = _parse_txn(spec)
    except (ValueError, KeyError, TypeError) as e:
        _fail(f"txn: invalid JSON on stdin ({e}); see raftkv txn --help for the format")

    async def op(c: Any) -> Any:
        return await c.txn(compare, success, failure)

    r = _kv_call(endpoints, timeout, op)
    results = [_op_result_json(x) for x in r.responses]
    if as_json:
        click.echo(json.dumps({"succeeded": r.succeeded, "revision": r.revision, "responses": results}))
    else:
        click.echo("SUCCESS" if r.succeeded else "FAILURE")
        for x in results:
            click.echo(json.dumps(x))


def _parse_txn(spec: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]]:
    from raftkv.kv.commands import Compare, DeleteRange, Put, Range
    from raftkv.kv.keys import prefix_end

    def compare(c: dict[str, Any]) -> Any:
        target = c["target"]
        value = c["value"]
        return Compare(c["key"].encode(), target, c.get("op", "="), value.encode() if target == "value" else int(value))

    def op(o: dict[str, Any]) -> Any:
        (kind, a), *rest = o.items()
        if rest:
            raise ValueError(f"one operation per object, got {sorted(o)}")
        key = a["key"].encode()
        end = prefix_end(key) if a.get("prefix") else None
        if kind == "put":
            return Put(key, a["value"].encode())
        if kind == "delete":
            return DeleteRange(key, end)
        if kind == "get":
            return Range(key, end)
        raise ValueError(f"unknown operation {kind!r} (use put, delete or get)")

    return (
        [compare(c) for c in spec.get("compare", [])],
        [op(o) for o in spec.get("success", [])],
        [op(o) for o in spec.get("failure", [])],
    )


def _op_result_json(r: Any) -> dict[str, Any]:
    from raftkv.kv.commands import DeleteResult, PutResult

    if isinstance(r, PutResult):
        return {"put": {"revision": r.revision}}
    if isinstance(r, DeleteResult):
        return {"delete": {"deleted": r.deleted, "revision": r.revision}}
    return {"get": {"kvs": [_kv_json(kv) for kv in r.kvs], "count": r.count}}


@main.command()
@_endpoints_option
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Watch every key starting with KEY.")
@click.option("--rev", type=int, default=0, help="Start from this revision (default: from now).")
@_json_option
def watch(endpoints: str | None, key: str, prefix: bool, rev: int, as_json: bool) -> None:
    """Print changes to KEY (or a prefix) as they happen, until Ctrl-C."""
    from raftkv.client import connect
    from raftkv.errors import Compacted
    from raftkv.kv.watch import EventType

    addrs = _endpoints(endpoints)

    async def run() -> None:
        async with connect(addrs) as c, c.watch(key, prefix=prefix, start_revision=rev) as w:
            async for ev in w:
                kind = "PUT" if ev.type == EventType.PUT else "DELETE"
                if as_json:
                    click.echo(json.dumps({"type": kind, "revision": ev.kv.mod_revision, "kv": _kv_json(ev.kv)}))
                elif kind == "PUT":
                    click.echo(f"PUT {_text(ev.kv.key)} {_text(ev.kv.value)} (revision {ev.kv.mod_revision})")
                else:
                    click.echo(f"DELETE {_text(ev.kv.key)} (revision {ev.kv.mod_revision})")

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except Compacted as e:
        _fail(f"revision {rev} is no longer kept (oldest is {e.oldest_revision}): watch from a later one", code=1)
    except RaftError as e:
        _fail(str(e), code=1)


# --- backups ---------------------------------------------------------------------------------------------------


@main.group()
def snapshot() -> None:
    """Backups: save a consistent image of a running cluster; restore it to seed a new cluster."""


@snapshot.command(name="save")
@_endpoints_option
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds for the whole download.")
def snapshot_save(endpoints: str | None, file: Path, timeout: float) -> None:
    """Write a consistent backup of the cluster's store to FILE (taken while the cluster keeps serving)."""
    from raftkv.backup import Backup, write_backup
    from raftkv.client import download_backup
    from raftkv.errors import BackupError

    addrs = _endpoints(endpoints)
    try:
        backup = Backup(*asyncio.run(download_backup(addrs, timeout)))
        write_backup(file, backup)
    except BackupError as e:
        _fail(str(e), code=1)
    except OSError as e:
        _fail(f"cannot write {file}: {e.strerror}", code=1)
    click.echo(f"saved {file}: index {backup.meta.index}, term {backup.meta.term}, {len(backup.image)} bytes")


@snapshot.command(name="restore")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="A new or empty directory.")
@click.option("--id", "id_", type=int, required=True, help="The id of the node that will use this data dir.")
@click.option("--cluster-id", default=None, help="The new cluster's id (default: the backup's).")
def snapshot_restore(file: Path, data_dir: Path, id_: int, cluster_id: str | None) -> None:
    """Seed DATA_DIR from a backup; then start `raftkv serve --data-dir DATA_DIR --id ID ...` on it.

    Restore the same backup into every node's data dir of the new cluster.
    """
    from raftkv.backup import restore_backup
    from raftkv.errors import BackupError, ConfigError
    from raftkv.raft.types import NodeId

    if id_ < 1:
        _fail(f"--id must be >= 1, got {id_}")
    try:
        backup = restore_backup(file, data_dir, NodeId(id_), cluster_id)
    except (BackupError, ConfigError) as e:
        _fail(str(e))
    click.echo(
        f"restored {file} into {data_dir} for node {id_}: the log starts after index {backup.meta.index}; "
        "start the node with raftkv serve"
    )


# --- local cluster ---------------------------------------------------------------------------------------------


@main.group()
def cluster() -> None:
    """Run a local cluster of real processes, for trying things out."""


@cluster.command()
@click.option("--nodes", type=int, default=3, show_default=True, help="How many nodes (3 or 5 make sense).")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=Path("raftkv-data"), show_default=True, help="Kept."
)
@click.option("--base-port", type=int, default=7001, show_default=True, help="Peer ports from here; clients +100.")
def up(nodes: int, data_dir: Path, base_port: int) -> None:
    """Start NODES local nodes, show a live status line, stop them all on Ctrl-C."""
    from rich.live import Live

    from raftkv.client import StatusReport, connect
    from raftkv.errors import ConfigError
    from raftkv.local import LocalCluster
    from raftkv.runtime.config import check_port_free

    if nodes < 1:
        _fail(f"--nodes must be >= 1, got {nodes}")
    lc = LocalCluster(data_dir, nodes, cluster_id="local", base_port=base_port)
    try:
        for i in lc.ids:
            check_port_free("--base-port", Address("127.0.0.1", lc.peer[i]))
            check_port_free("--base-port", Address("127.0.0.1", lc.client[i]))
    except ConfigError as e:
        _fail(f"{e}; choose another --base-port")
    lc.start_all()
    endpoints = ",".join(map(str, lc.endpoints()))
    click.echo(f"{nodes} nodes starting; data and logs in {data_dir}/")
    click.echo(f"export {ENDPOINTS_ENV}={endpoints}")
    click.echo("then try: raftkv put hello world; raftkv get hello; raftkv status   (Ctrl-C stops the cluster)")

    async def watch_status(live: Live) -> None:
        async with connect(lc.endpoints(), cluster_id="local") as c:
            while True:
                reports = await c.admin.statuses(timeout=0.5)
                parts = []
                for r in reports:
                    if isinstance(r, StatusReport):
                        mark = "*" if r.role == "leader" else ""
                        parts.append(f"{r.id}{mark}:{r.role[:4]} t{r.term} c{r.commit}")
                    else:
                        parts.append(f"{r[0]}: down")
                dead = lc.exited()
                extra = f"  exited: {dead} (see {data_dir}/nodeN.log)" if dead else ""
                live.update("  ".join(parts) + extra)
                await asyncio.sleep(1.0)

    try:
        with Live("starting...", refresh_per_second=2, transient=False) as live:
            asyncio.run(watch_status(live))
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping the cluster...")
        lc.stop_all()
        click.echo("stopped")


# --- benchmark --------------------------------------------------------------------------------------------------


@main.command()
@_endpoints_option
@click.option("--clients", type=int, default=64, show_default=True, help="Operations kept in flight.")
@click.option("--duration", type=float, default=10.0, show_default=True, help="Seconds.")
@click.option("--value-size", type=int, default=100, show_default=True, help="Bytes per value.")
@click.option("--ratio", default="1:0", show_default=True, help="put:get mix, e.g. 1:0, 1:1, 0:1.")
@click.option("--keys", type=int, default=10_000, show_default=True, help="Size of the key space.")
@click.option("--serializable", is_flag=True, help="Gets read a node's local copy (possibly stale).")
@_json_option
def bench(
    endpoints: str | None,
    clients: int,
    duration: float,
    value_size: int,
    ratio: str,
    keys: int,
    serializable: bool,
    as_json: bool,
) -> None:
    """Load a cluster for DURATION seconds and print ops/s, latency percentiles and a histogram."""
    import random
    import resource
    import time

    from raftkv.client import connect

    try:
        puts, gets = (int(x) for x in ratio.split(":"))
        if puts < 0 or gets < 0 or puts + gets == 0:
            raise ValueError
    except ValueError:
        _fail(f"--ratio {ratio!r}: use PUTS:GETS with non-negative integers, e.g. 1:1")
    addrs = _endpoints(endpoints)
    value = b"x" * value_size
    latencies: list[float] = []
    errors: list[str] = []

    async def run() -> float:
        async with connect(addrs, timeout=10.0) as c:
            await c.put("bench/warmup", value)
            if gets:
                await asyncio.gather(*(c.put(f"bench/{k}", value) for k in range(min(keys, 1000))))
            deadline = time.perf_counter() + duration

            async def worker(n: int) -> None:
                rng = random.Random(n)
                while time.perf_counter() < deadline:
                    key = f"bench/{rng.randrange(min(keys, 1000) if gets and not puts else keys)}"
                    t0 = time.perf_counter()
                    try:
                        if rng.randrange(puts + gets) < puts:
                            await c.put(key, value)
                        else:
                            await c.get(key, serializable=serializable)
                        latencies.append(time.perf_counter() - t0)
                    except RaftError as e:
                        errors.append(str(e))

            started = time.perf_counter()
            await asyncio.gather(*(worker(n) for n in range(clients)))
            return time.perf_counter() - started

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = _run_bench(run)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime) / elapsed
    lat = sorted(latencies)
    if not lat:
        _fail(f"no operation succeeded ({errors[:1]})", code=1)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    summary = {
        "ops": len(lat),
        "errors": len(errors),
        "seconds": round(elapsed, 3),
        "ops_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(pct(0.5), 3),
        "p90_ms": round(pct(0.9), 3),
        "p99_ms": round(pct(0.99), 3),
        "max_ms": round(lat[-1] * 1000, 3),
        "client_cpu_percent": round(cpu * 100, 1),
        "clients": clients,
        "ratio": ratio,
        "value_size": value_size,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"{summary['ops']} ops in {elapsed:.1f} s: {summary['ops_per_s']:,.0f} ops/s "
        f"({clients} in flight, put:get {ratio}, {value_size} B values), {len(errors)} errors"
    )
    click.echo(
        f"latency ms: p50 {summary['p50_ms']:.2f}  p90 {summary['p90_ms']:.2f}  p99 {summary['p99_ms']:.2f}  "
        f"max {summary['max_ms']:.2f}   (load generator CPU {summary['client_cpu_percent']:.0f}%)"
    )
    bounds = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, float("inf")]
    counts = [0] * len(bounds)
    for x in lat:
        ms = x * 1000
        counts[next(k for k, b in enumerate(bounds) if ms <= b)] += 1
    top = max(counts)
    low = 0.0
    for b, n in zip(bounds, counts, strict=True):
        if n:
            label = f"{low:g}-{b:g} ms" if b != float("inf") else f">{low:g} ms"
            click.echo(f"  {label:>14} {n:>8}  {'#' * max(1, round(40 * n / top))}")
        low = b


def _run_bench(fn: Any) -> float:
    result: float = asyncio.run(fn())
    return result


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
