"""A node's data directory: the write-ahead log in ``wal/`` and the snapshots in ``snap/``, opened together.

Theory of operation
-------------------
Opening a node's durable state is: recover the log (which fixes ``first_index``), then pick the newest
snapshot that, together with the log, still reaches every entry (a damaged newest snapshot may be replaced
by an older one only if the log was not compacted past it). The runtime restores the state machine from
``snapshot`` (if any), then replays committed entries from the log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from raftkv.storage.fileio import FileIO
from raftkv.storage.snapshots import Snapshot, SnapshotStore
from raftkv.storage.wal import DEFAULT_SEGMENT_BYTES, WAL

WAL_DIR = "wal"
SNAP_DIR = "snap"


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
    except BaseException:
        wal.close()
        raise
    return NodeStorage(wal, snapshots, snapshot)
