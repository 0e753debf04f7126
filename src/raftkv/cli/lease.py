"""``raftkv lease grant|revoke|keep-alive|timetolive|list`` (etcdctl's names; ids are printed in decimal)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from raftkv.cli.common import client_call, endpoints_option, fail, json_option, parse_endpoints, tls_options
from raftkv.errors import RaftError

_timeout = click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds, retries included.")


@click.group()
def lease() -> None:
    """Leases: keys attached to a lease are deleted when it is revoked or expires (not kept alive)."""


@lease.command()
@endpoints_option
@click.argument("ttl", type=int)
@json_option
@_timeout
def grant(endpoints: str | None, ttl: int, as_json: bool, timeout: float) -> None:
    """Grant a lease of TTL seconds; print its id."""
    from raftkv.kv.commands import MAX_LEASE_TTL_S

    if not 1 <= ttl <= MAX_LEASE_TTL_S:
        fail(f"TTL must be 1..{MAX_LEASE_TTL_S} seconds, not {ttl}")

    async def op(c: Any) -> Any:
        return await c.lease_grant(ttl)

    r = client_call(endpoints, timeout, op)
    if as_json:
        click.echo(json.dumps({"id": r.id, "ttl": r.ttl_s}))
    else:
        click.echo(f"lease {r.id} granted with TTL({r.ttl_s}s)")


@lease.command()
@endpoints_option
@click.argument("lease_id", metavar="ID", type=int)
@_timeout
def revoke(endpoints: str | None, lease_id: int, timeout: float) -> None:
    """Revoke lease ID now: the keys attached to it are deleted."""

    async def op(c: Any) -> Any:
        return await c.lease_revoke(lease_id)

    r = client_call(endpoints, timeout, op)
    click.echo(f"lease {lease_id} revoked ({r.deleted} keys deleted)")


@lease.command(name="keep-alive")
@endpoints_option
@click.argument("lease_id", metavar="ID", type=int)
@click.option("--once", is_flag=True, help="Refresh once and exit (default: keep refreshing until Ctrl-C).")
@_timeout
def keep_alive(endpoints: str | None, lease_id: int, once: bool, timeout: float) -> None:
    """Keep lease ID alive: refresh it every third of its TTL until Ctrl-C (or once)."""
    from raftkv.client import connect

    addrs = parse_endpoints(endpoints)

    async def run() -> None:
        async with connect(addrs, **tls_options(), timeout=timeout) as c:
            while True:
                ttl = await c.lease_keep_alive_once(lease_id)
                click.echo(f"lease {lease_id} keepalived with TTL({ttl})")
                if once:
                    return
                await asyncio.sleep(max(0.5, ttl / 3))

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except RaftError as e:
        fail(str(e), code=1)


@lease.command()
@endpoints_option
@click.argument("lease_id", metavar="ID", type=int)
@click.option("--keys", is_flag=True, help="Also list the keys attached to the lease.")
@json_option
@_timeout
def timetolive(endpoints: str | None, lease_id: int, keys: bool, as_json: bool, timeout: float) -> None:
    """Print lease ID's granted TTL and the seconds it has left (and, with --keys, its keys)."""

    async def op(c: Any) -> Any:
        return await c.lease_time_to_live(lease_id, keys=keys)

    r = client_call(endpoints, timeout, op)
    names = [k.decode("utf-8", errors="backslashreplace") for k in r.keys]
    if as_json:
        click.echo(json.dumps({"id": r.id, "ttl": r.ttl_s, "granted_ttl": r.granted_ttl_s, "keys": names}))
        return
    line = f"lease {r.id} granted with TTL({r.granted_ttl_s}s), remaining({r.ttl_s}s)"
    if keys:
        line += f", attached keys([{' '.join(names)}])"
    click.echo(line)


@lease.command(name="list")
@endpoints_option
@json_option
@_timeout
def list_(endpoints: str | None, as_json: bool, timeout: float) -> None:
    """Print the id of every lease."""

    async def op(c: Any) -> Any:
        return await c.leases()

    ids = client_call(endpoints, timeout, op)
    if as_json:
        click.echo(json.dumps({"leases": ids}))
        return
    click.echo(f"found {len(ids)} leases")
    for i in ids:
        click.echo(str(i))
