"""``raftkv snapshot save`` against an in-process cluster: the backupChunk results carry the configuration."""

from __future__ import annotations

from pathlib import Path

from raftkv.backup import Backup, read_backup, write_backup
from raftkv.client import connect
from tests.runtime.cluster import kv_servers


async def test_a_downloaded_backup_carries_the_configuration(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test", timeout=5.0) as c:
            await c.put("k", "v")
            meta, cluster_id, image = await c.admin.download_backup(5.0)
        assert cluster_id == "test" and meta.index > 0 and image
        # The configuration as of the image's index, with every member's peer address (the first leader wrote
        # the bootstrap configuration, addresses included, into the log).
        assert meta.conf.voters == tuple(s.running.id for s in servers)
        assert [m.peer_address for m in meta.conf.members] == [str(s.config.listen_peer) for s in servers]
        assert meta.conf == servers[0].running.conf_at(meta.index)
        write_backup(tmp_path / "b.raftkv", Backup(meta, cluster_id, image))
        assert read_backup(tmp_path / "b.raftkv").meta == meta
    finally:
        for s in servers:
            await s.aclose(transfer_leadership=False)
