"""``raftkv snapshot save|restore``: consistent backups of a running cluster, and seeding a new one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from raftkv.cli.common import endpoints_option, fail, parse_endpoints, tls_options


@click.group()
def snapshot() -> None:
    """Backups: save a consistent image of a running cluster; restore it to seed a new cluster."""


@snapshot.command(name="save")
@endpoints_option
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds for the whole download.")
def snapshot_save(endpoints: str | None, file: Path, timeout: float) -> None:
    """Write a consistent backup of the cluster's store to FILE (taken while the cluster keeps serving)."""
    from raftkv.backup import Backup, write_backup
    from raftkv.client import connect
    from raftkv.errors import AuthError, BackupError

    addrs = parse_endpoints(endpoints)
    options = tls_options()

    async def download() -> tuple[Any, str, bytes]:
        async with connect(addrs, timeout=timeout, **options) as client:
            if client.user:
                await client.authenticate()  # a backup is root's while authentication is on
            return await client.admin.download_backup(timeout)

    try:
        backup = Backup(*asyncio.run(download()))
        write_backup(file, backup)
    except (BackupError, AuthError) as e:
        fail(str(e), code=1)
    except OSError as e:
        fail(f"cannot write {file}: {e.strerror}", code=1)
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
        fail(f"--id must be >= 1, got {id_}")
    try:
        backup = restore_backup(file, data_dir, NodeId(id_), cluster_id)
    except (BackupError, ConfigError) as e:
        fail(str(e))
    click.echo(
        f"restored {file} into {data_dir} for node {id_}: the log starts after index {backup.meta.index}; "
        "start the node with raftkv serve"
    )
