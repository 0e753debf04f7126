"""``raftkv snapshot save|restore``: consistent backups of a running cluster, and seeding a new one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from raftkv.cli.common import endpoints_option, fail, parse_endpoints, tls_streams


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
    from raftkv.client import download_backup
    from raftkv.errors import BackupError

    addrs = parse_endpoints(endpoints)
    try:
        backup = Backup(*asyncio.run(download_backup(addrs, timeout, streams=tls_streams())))
        write_backup(file, backup)
    except BackupError as e:
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
