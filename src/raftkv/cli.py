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
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

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
def serve(config_file: Path | None, id_: int | None, **options: Any) -> None:
    """Run one node until SIGTERM or SIGINT (graceful stop within 2 s, handing leadership over)."""
    from raftkv.server.config import ConfigError, build_config
    from raftkv.server.identity import claim_data_dir
    from raftkv.server.logs import setup_logging

    try:
        cfg = build_config({"id": id_, **options}, config_file)
        cfg.validate()
        claim_data_dir(cfg.data_dir, cfg.cluster_id, cfg.id)
    except ConfigError as e:
        _fail(str(e))
    setup_logging(cfg.log_level, cfg.log_format)
    sys.exit(asyncio.run(_serve(cfg)))


async def _serve(cfg: Any) -> int:
    from raftkv.server.config import ConfigError
    from raftkv.server.node import RaftNode
    from raftkv.server.statemachine import CommandLog
    from raftkv.storage import StorageError

    node = RaftNode(cfg, CommandLog(), check_ports=False)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except ConfigError as e:
        await node.aclose(transfer_leadership=False)
        _fail(str(e))
    except StorageError as e:
        await node.aclose(transfer_leadership=False)
        _fail(f"cannot open the data dir: {e}", code=1)
    stopping = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(node.stopped.wait())
    await asyncio.wait({stopping, failed}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    failed.cancel()
    if stop.is_set():
        log.info("node %s: signal received, stopping", cfg.id)
    await node.aclose()
    return 0 if node.failure is None else 1


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
        async with connect(addrs) as cluster:
            return await cluster.statuses(timeout)

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
    from raftkv.client import NodeConnection
    from raftkv.transport.kjloop import kj_loop

    addrs = _endpoints(endpoints)

    async def run() -> bool:
        ok = True
        async with kj_loop():
            for addr in addrs:
                conn = NodeConnection(addr)
                try:
                    await conn.connect(timeout)
                    node, term, rtt = await conn.ping(timeout)
                    click.echo(f"{addr}: node {node}, term {term}, {rtt * 1000:.2f} ms")
                except Exception as e:  # report every endpoint, whatever went wrong with one
                    from raftkv.client import _why

                    click.echo(f"{addr}: {_why(e)}")
                    ok = False
                finally:
                    conn.close()
        return ok

    sys.exit(0 if asyncio.run(run()) else 1)


@main.command()
@_endpoints_option
@click.argument("data")
@click.option(
    "--timeout", type=float, default=5.0, show_default=True, help="Seconds to commit, leader changes included."
)
def propose(endpoints: str | None, data: str, timeout: float) -> None:
    """Replicate DATA through the leader (found automatically) and print where it was committed."""
    from raftkv.client import Unavailable, connect

    addrs = _endpoints(endpoints)

    async def run() -> tuple[int, int, bytes]:
        async with connect(addrs) as cluster:
            return await cluster.propose(data.encode(), timeout)

    try:
        index, term, _result = asyncio.run(run())
    except Unavailable as e:
        shown = ",".join(map(str, addrs))
        _fail(f"no leader reachable at {shown}: is the cluster running? try raftkv status ({e})", code=1)
    click.echo(f"committed at index {index} (term {term})")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
