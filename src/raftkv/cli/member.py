"""``raftkv member list|add|promote|remove`` and ``raftkv leader transfer``: changing a live cluster's membership.

Each change goes to the leader (the client follows redirections) and returns once it is committed; a refusal is
one line on stderr with exit code 1, and changes nothing. docs/membership.md walks through replacing a machine,
growing and shrinking a cluster, and moving the leader, with these exact commands.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import click

from raftkv.cli.common import client_call, endpoints_option, fail, json_option, parse_endpoints
from raftkv.transport.address import Address, AddressError

T = TypeVar("T")

change_timeout_option = click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the change to commit."
)


def _address(value: str, flag: str) -> str:
    try:
        return str(Address.parse(value, flag))
    except AddressError as e:
        fail(str(e))


@click.group()
def member() -> None:
    """List and change the cluster's members (docs/membership.md)."""


@member.command("list")
@endpoints_option
@json_option
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds per call.")
def list_(endpoints: str | None, as_json: bool, timeout: float) -> None:
    """Show every member: voter or learner, the leader, addresses, lag behind the leader, reachability."""
    members = client_call(endpoints, timeout, lambda c: c.members(timeout))
    if as_json:
        click.echo(json.dumps([m.to_json() for m in members], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for col in ("id", "role", "leader", "peer address", "client address", "lag", "reachable"):
        table.add_column(col, no_wrap=True)
    for m in members:
        table.add_row(
            str(m.id),
            m.role,
            "[bold green]yes[/]" if m.is_leader else "",
            m.peer_address or "-",
            m.client_address or "-",
            "-" if m.lag is None else f"{m.lag:,}",
            "yes" if m.reachable else "[red]no[/]",
        )
    Console(width=max(120, Console().width)).print(table)


@member.command("add")
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--peer-addr", required=True, metavar="HOST:PORT", help="Where the other members reach the new one.")
@click.option("--client-addr", required=True, metavar="HOST:PORT", help="Where clients reach the new member.")
@click.option("--learner", is_flag=True, help="Add it as a learner (no vote); promote it once it has caught up.")
@endpoints_option
@change_timeout_option
def add(node_id: int, peer_addr: str, client_addr: str, learner: bool, endpoints: str | None, timeout: float) -> None:
    """Add member ID, then print the `raftkv serve` line that starts it (with an empty data dir)."""
    peer = _address(peer_addr, "--peer-addr")
    client = _address(client_addr, "--client-addr")
    addrs = parse_endpoints(endpoints)

    async def cluster_id_of(c: Any) -> str:
        statuses = await c.admin.statuses(timeout=min(timeout, 2.0))
        return next((s.cluster_id for s in statuses if hasattr(s, "cluster_id")), "raftkv")

    cluster_id = client_call(endpoints, timeout, cluster_id_of)
    # Printed first: a voter added to a cluster that needs it for a quorum (1 -> 2 voters) commits only once
    # the new node runs, so the line to start it must not wait for the commit.
    join = ",".join(str(a) for a in addrs)
    click.echo(f"to start node {node_id}, with an empty data dir:")
    click.echo(
        f"  raftkv serve --id {node_id} --cluster-id {cluster_id} --data-dir ./node{node_id} "
        f"--listen-peer {peer} --listen-client {client} --join {join}"
    )
    conf = client_call(
        endpoints, timeout, lambda c: c.add_member(node_id, peer, client, learner=learner, timeout=timeout)
    )
    what = "learner" if learner else "voter"
    click.echo(f"added node {node_id} as a {what}; the configuration is now {conf.describe()}")
    if learner:
        click.echo(f"once `raftkv member list` shows it caught up: raftkv member promote {node_id}")


@member.command()
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@endpoints_option
@change_timeout_option
def promote(node_id: int, endpoints: str | None, timeout: float) -> None:
    """Make learner ID a voter (refused, with its lag, while it is behind the leader)."""
    conf = client_call(endpoints, timeout, lambda c: c.promote_member(node_id, timeout=timeout))
    click.echo(f"promoted node {node_id}; the configuration is now {conf.describe()}")


@member.command()
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@endpoints_option
@change_timeout_option
def remove(node_id: int, endpoints: str | None, timeout: float) -> None:
    """Remove member ID (the leader too: it hands over once its removal commits). Stop its process after."""
    conf = client_call(endpoints, timeout, lambda c: c.remove_member(node_id, timeout=timeout))
    click.echo(f"removed node {node_id}; the configuration is now {conf.describe()}")


@click.group()
def leader() -> None:
    """Move the leadership."""


@leader.command()
@click.option("--to", "to", type=click.IntRange(min=1), default=None, help="The voter to hand over to.")
@endpoints_option
@change_timeout_option
def transfer(to: int | None, endpoints: str | None, timeout: float) -> None:
    """Hand the leadership to --to, or to the most caught-up voter."""
    new = client_call(endpoints, timeout, lambda c: c.transfer_leader(to, timeout=timeout))
    click.echo(f"node {new} is the leader")
