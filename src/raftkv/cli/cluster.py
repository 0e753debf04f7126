"""``raftkv cluster up``: a local cluster of real ``raftkv serve`` processes, for trying things out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from raftkv.cli.common import ENDPOINTS_ENV, fail
from raftkv.transport.address import Address


@click.group()
def cluster() -> None:
    """Run a local cluster of real processes, for trying things out."""


@cluster.command()
@click.option("--nodes", type=int, default=3, show_default=True, help="How many nodes (3 or 5 make sense).")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=Path("raftkv-data"), show_default=True, help="Kept."
)
@click.option(
    "--base-port",
    type=int,
    default=7001,
    show_default=True,
    help="Peer ports from here; clients +100, etcd +200, dashboards +300.",
)
@click.option(
    "--etcd/--no-etcd",
    default=True,
    show_default=True,
    help="Serve etcd's v3 API (for etcdctl and etcd's clients) on each node, ports from --base-port + 200.",
)
def up(nodes: int, data_dir: Path, base_port: int, etcd: bool) -> None:
    """Start NODES local nodes, show a live status line, stop them all on Ctrl-C."""
    from rich.live import Live

    from raftkv.cli.local import LocalCluster
    from raftkv.client import StatusReport, connect
    from raftkv.errors import ConfigError
    from raftkv.runtime.config import check_port_free

    if nodes < 1:
        fail(f"--nodes must be >= 1, got {nodes}")
    lc = LocalCluster(data_dir, nodes, cluster_id="local", base_port=base_port, etcd=etcd, http=True)
    try:
        for i in lc.ids:
            check_port_free("--base-port", Address("127.0.0.1", lc.peer[i]))
            check_port_free("--base-port", Address("127.0.0.1", lc.client[i]))
            check_port_free("--base-port", Address("127.0.0.1", lc.http[i]))
            if etcd:
                check_port_free("--base-port", Address("127.0.0.1", lc.etcd[i]))
    except ConfigError as e:
        fail(f"{e}; choose another --base-port")
    lc.start_all()
    endpoints = ",".join(map(str, lc.endpoints()))
    click.echo(f"{nodes} nodes starting; data and logs in {data_dir}/")
    click.echo(f"export {ENDPOINTS_ENV}={endpoints}")
    if etcd:
        click.echo(f"export ETCDCTL_API=3 ETCDCTL_ENDPOINTS={','.join(map(str, lc.etcd_endpoints()))}")
    click.echo(f"dashboards: {'  '.join(f'http://127.0.0.1:{lc.http[i]}/' for i in lc.ids)}  (also /health, /metrics)")
    click.echo("then try: raftkv put hello world; raftkv get hello; raftkv status   (Ctrl-C stops the cluster)")
    if etcd:
        click.echo("    and etcd's tools on the etcd endpoints: etcdctl get hello; etcdctl member list")

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
