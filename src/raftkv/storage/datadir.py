"""A node's data directory: the write-ahead log in ``wal/`` and the snapshots in ``snap/``, opened together.

Theory of operation
-------------------
Opening a node's durable state is: recover the log (which fixes ``first_index``), then pick the newest
snapshot that, together with the log, still reaches every entry (a damaged newest snapshot may be replaced
by an older one only if the log was not compacted past it). The runtime restores the state machine from
``snapshot`` (if any), then replays committed entries from the log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from raftkv.storage.fileio import FileIO
from raftkv.storage.snapshots import Snapshot, SnapshotStore
from raftkv.storage.wal import DEFAULT_SEGMENT_BYTES, WAL

log = logging.getLogger("raftkv.storage")

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
