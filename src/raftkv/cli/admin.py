"""``raftkv status`` and ``raftkv ping``: what each node says about itself, and the seed's echo."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from raftkv.cli.common import endpoints_option, parse_endpoints, timeout_option, tls_options


@click.command()
@endpoints_option
@click.option("--json", "as_json", is_flag=True, help="One JSON list, one object per endpoint.")
@timeout_option
def status(endpoints: str | None, as_json: bool, timeout: float) -> None:
    """Show each node's role, term, leader and log positions."""
    from raftkv.client import StatusReport, connect

    addrs = parse_endpoints(endpoints)

    async def run() -> list[StatusReport | tuple[str, str]]:
        async with connect(addrs, **tls_options()) as client:
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


@click.command()
@endpoints_option
@timeout_option
def ping(endpoints: str | None, timeout: float) -> None:
    """Echo a message through each node (the seed's ping) and show the round trip."""
    from raftkv.client import connect, explain

    addrs = parse_endpoints(endpoints)

    async def run() -> bool:
        ok = True
        async with connect(addrs, **tls_options(), timeout=timeout) as client:
            for addr in addrs:
                try:
                    node, term, rtt = await client.admin.ping(addr, timeout)
                    click.echo(f"{addr}: node {node}, term {term}, {rtt * 1000:.2f} ms")
                except Exception as e:  # report every endpoint, whatever went wrong with one
                    click.echo(f"{addr}: {explain(e)}")
                    ok = False
        return ok

    sys.exit(0 if asyncio.run(run()) else 1)
