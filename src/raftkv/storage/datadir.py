"""A node's data directory: its whole layout, its identity, and opening its durable state.

Theory of operation
-------------------
This module is the one place that knows where things live in a data directory::

    DATA_DIR/raftkv-identity.json     which node of which cluster owns the directory (written first)
    DATA_DIR/wal/                     the write-ahead log (segment files)
    DATA_DIR/snap/                    snapshot files
    DATA_DIR/kv/                      the key-value store's LMDB environment (with the KV store)
    DATA_DIR/incoming-from-N.tmp      a snapshot being received from node N (temporary)

**Identity.** A data directory belongs to one node of one cluster, recorded on first start and checked on
every start. Starting node 2 on node 1's data directory, or a node of cluster "prod" on a "staging" directory,
would make a node vote and acknowledge with someone else's log: the worst kind of silent corruption. The
identity file is written atomically (temp file, fsync, rename, fsync of the folder) before any Raft state
exists; a directory that holds anything but no identity file is refused.

**Opening** a node's durable state is: recover the log (which fixes ``first_index``), then pick the newest
snapshot that, together with the log, still reaches every entry (a damaged newest snapshot may be replaced
by an older one only if the log was not compacted past it). The runtime restores the state machine from
``snapshot`` (if any), then replays committed entries from the log.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from raftkv.raft.errors import ConfigError
from raftkv.raft.types import NodeId
from raftkv.storage.fileio import FileIO
from raftkv.storage.snapshots import Snapshot, SnapshotStore
from raftkv.storage.wal import DEFAULT_SEGMENT_BYTES, WAL, list_segments, scan

log = logging.getLogger("raftkv.storage")

IDENTITY_FILE = "raftkv-identity.json"
WAL_DIR = "wal"
SNAP_DIR = "snap"
KV_DIR = "kv"


@dataclass(frozen=True, slots=True)
class DataDir:
    """The paths of one node's data directory (nothing is touched until :meth:`claim` or :meth:`open`)."""

    root: Path

    @property
    def identity(self) -> Path:
        return self.root / IDENTITY_FILE

    @property
    def wal(self) -> Path:
        return self.root / WAL_DIR

    @property
    def snapshots(self) -> Path:
        return self.root / SNAP_DIR

    @property
    def kv(self) -> Path:
        """The key-value store's LMDB environment."""
        return self.root / KV_DIR

    @property
    def incoming(self) -> Path:
        """Where snapshots being received from a leader are written (``incoming-from-N.tmp``)."""
        return self.root

    def holds_log(self) -> bool:
        """Whether the write-ahead log exists with at least one segment (False: a fresh node)."""
        return self.wal.is_dir() and bool(list_segments(str(self.wal)))

    def holds_configuration(self) -> bool:
        """Whether the log holds a cluster configuration (at its boundary or in an entry): False for a fresh
        node, and for a joining node that stopped before the leader's first entries or snapshot reached it.
        Reads the whole log (a verifying scan; it modifies nothing)."""
        if not self.holds_log():
            return False
        recovered = scan(str(self.wal))
        return not recovered.conf.is_empty() or bool(recovered.conf_indexes)

    def claim(self, cluster_id: str, node_id: NodeId) -> None:
        """Create the directory if needed and make sure it belongs to (cluster_id, node_id)."""
        claim_data_dir(self.root, cluster_id, node_id)

    def open(self, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES, io: FileIO | None = None) -> NodeStorage:
        return open_data_dir(self.root, segment_bytes=segment_bytes, io=io)


@dataclass
class NodeStorage:
    """The open durable state of one node. ``snapshot`` is the one to restore from (None: start empty)."""

    wal: WAL
    snapshots: SnapshotStore
    snapshot: Snapshot | None

    def close(self) -> None:
        self.wal.close()


def open_data_dir(
    path: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES, io: FileIO | None = None
) -> NodeStorage:
    """Open (creating if needed) ``path/wal`` and ``path/snap`` and choose the snapshot to restore from.

    Raises :class:`CorruptLogError` or :class:`CorruptSnapshotError` when the node cannot safely start.
    """
    wal = WAL.open(os.path.join(path, WAL_DIR), segment_bytes=segment_bytes, io=io)
    try:
        snapshots = SnapshotStore.open(os.path.join(path, SNAP_DIR), io=io)
        snapshot = snapshots.load(wal.first_index())
        if snapshot is not None:
            _finish_install(wal, snapshot)
    except BaseException:
        wal.close()
        raise
    return NodeStorage(wal, snapshots, snapshot)


def _finish_install(wal: WAL, snapshot: Snapshot) -> None:
    """Complete an install the log never heard of, so the log and the snapshot agree again.

    A snapshot received from a leader is saved to the store as soon as its last chunk arrives; the log learns
    of it only once the core accepts it (``WAL.apply_snapshot`` in the next Ready). A crash in between — or a
    core that ignored it because its term had moved on — leaves a newest snapshot that runs past the log, or
    disagrees with it at its last index. Restoring the state machine from it while the log says otherwise
    would put the applied index past the log's last entry. A leader snapshots only what it applied, so the
    snapshot is committed state: installing it now is what the core does on InstallSnapshot (§7: keep the
    entries after it if the log holds its last entry with its term, else discard the log).
    """
    meta = snapshot.meta
    last = wal.last_index()
    if meta.index <= last and wal.term(meta.index) == meta.term:
        return  # the usual case: the log agrees with the snapshot (our own, or an install that completed)
    log.warning(
        "%s: the newest snapshot (index %s, term %s) was received but never installed in the log (last index "
        "%s); installing it now",
        wal.path,
        meta.index,
        meta.term,
        last,
    )
    wal.apply_snapshot(meta)


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
