"""A data directory belongs to one node of one cluster, recorded on first start and checked on every start.

Starting node 2 on node 1's data directory, or a node of cluster "prod" on a "staging" directory, would make a
node vote and acknowledge with someone else's log: the worst kind of silent corruption. The identity file is
written atomically (temp file, fsync, rename, fsync of the folder) before any Raft state exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from raftkv.errors import ConfigError
from raftkv.raft.types import NodeId

IDENTITY_FILE = "raftkv-identity.json"


def claim_data_dir(data_dir: Path, cluster_id: str, node_id: NodeId) -> None:
    """Create ``data_dir`` if needed and make sure it belongs to (cluster_id, node_id); ConfigError if not."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--data-dir {data_dir}: cannot create it ({e.strerror})") from None
    if not os.access(data_dir, os.W_OK):
        raise ConfigError(f"--data-dir {data_dir}: not writable by this user")
    path = data_dir / IDENTITY_FILE
    if path.exists():
        try:
            found = json.loads(path.read_text())
            owner_cluster, owner_node = str(found["cluster_id"]), int(found["node_id"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"--data-dir {data_dir}: {IDENTITY_FILE} is unreadable ({e}); is this a raftkv dir?"
            ) from None
        if (owner_cluster, owner_node) != (cluster_id, node_id):
            raise ConfigError(
                f"--data-dir {data_dir} belongs to node {owner_node} of cluster {owner_cluster!r}, not node "
                f"{node_id} of cluster {cluster_id!r}: use that node's identity or another data dir"
            )
        return
    leftovers = sorted(p.name for p in data_dir.iterdir() if not p.name.startswith("."))
    if leftovers:
        raise ConfigError(
            f"--data-dir {data_dir} is not empty ({', '.join(leftovers[:3])}) but has no {IDENTITY_FILE}: "
            "refusing to adopt unknown data; use an empty directory"
        )
    tmp = data_dir / f".{IDENTITY_FILE}.tmp"
    payload = json.dumps({"cluster_id": cluster_id, "node_id": int(node_id), "format": 1}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
