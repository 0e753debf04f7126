"""``raftkv snapshot save`` against an in-process cluster: the backupChunk results carry the configuration."""

from __future__ import annotations

from pathlib import Path

from raftkv.backup import Backup, read_backup, write_backup
from raftkv.client import connect
from raftkv.raft.types import ConfState
from tests.runtime.cluster import kv_servers


async def test_a_downloaded_backup_carries_the_configuration(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test", timeout=5.0) as c:
            await c.put("k", "v")
            meta, cluster_id, image = await c.admin.download_backup(5.0)
        assert cluster_id == "test" and meta.index > 0 and image
        # The node reports the voters of now, without addresses, until the runtime knows the configuration at
        # an index (kvserver.admin's TODO); the wire carries whatever it reports, member by member.
        assert meta.conf == ConfState.of_voters(s.running.id for s in servers)
        write_backup(tmp_path / "b.raftkv", Backup(meta, cluster_id, image))
        assert read_backup(tmp_path / "b.raftkv").meta == meta
    finally:
        for s in servers:
            await s.aclose(transfer_leadership=False)
