"""Durable state: the write-ahead log (:class:`WAL`) and snapshot files (:class:`SnapshotStore`).

Blocking file I/O; the runtime calls it off the event loop. See ``docs/storage.md`` for the on-disk formats,
the recovery rules and the error model, and ``python -m raftkv.storage inspect DIR`` to examine a data dir.
"""

from raftkv.storage.datadir import DataDir, NodeStorage, claim_data_dir, open_data_dir
from raftkv.storage.errors import (
    CorruptLogError,
    CorruptSnapshotError,
    DiskFullError,
    StorageClosedError,
    StorageError,
    StorageInUseError,
    StorageIOError,
    UnsupportedFormatError,
)
from raftkv.storage.snapshots import Snapshot, SnapshotInfo, SnapshotStore
from raftkv.storage.wal import WAL

__all__ = [
    "WAL",
    "CorruptLogError",
    "CorruptSnapshotError",
    "DataDir",
    "DiskFullError",
    "NodeStorage",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotStore",
    "StorageClosedError",
    "StorageError",
    "StorageIOError",
    "StorageInUseError",
    "UnsupportedFormatError",
    "claim_data_dir",
    "open_data_dir",
]
