"""The replicated key-value store's state machine: pure, deterministic, no I/O. See ``machine.py``.

Commands and results (``commands.py``) follow etcd v3's data model; client sessions give exactly-once writes
(``sessions.py``, Raft dissertation §6.3); watch events are kept in a bounded history (``watch.py``). The
state machine runs over a small backend protocol (``backend.py``) with an in-memory implementation here and a
durable LMDB one in ``raftkv.storage.kv_lmdb``. ``docs/kv.md`` has the whole story.

The names below are imported lazily, so that importing one module of the package (``raftkv.kv.errors``, which
``raftkv.errors`` re-exports) does not load the whole state machine.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Backend": "raftkv.kv.backend",
    "CloseSession": "raftkv.kv.commands",
    "Command": "raftkv.kv.commands",
    "CommandError": "raftkv.kv.errors",
    "Compacted": "raftkv.kv.errors",
    "Compare": "raftkv.kv.commands",
    "DeleteRange": "raftkv.kv.commands",
    "DeleteResult": "raftkv.kv.commands",
    "ErrorCode": "raftkv.kv.errors",
    "ErrorResult": "raftkv.kv.commands",
    "Event": "raftkv.kv.watch",
    "EventType": "raftkv.kv.watch",
    "FROM_KEY": "raftkv.kv.keys",
    "KVError": "raftkv.kv.errors",
    "KVStateMachine": "raftkv.kv.machine",
    "KeepAlive": "raftkv.kv.commands",
    "KeyValue": "raftkv.kv.commands",
    "MAX_KEY_BYTES": "raftkv.kv.keys",
    "MAX_VALUE_BYTES": "raftkv.kv.keys",
    "MemoryBackend": "raftkv.kv.backend",
    "Meta": "raftkv.kv.backend",
    "Op": "raftkv.kv.commands",
    "OpResult": "raftkv.kv.commands",
    "OpenSession": "raftkv.kv.commands",
    "Put": "raftkv.kv.commands",
    "PutResult": "raftkv.kv.commands",
    "Range": "raftkv.kv.commands",
    "RangeResult": "raftkv.kv.commands",
    "ReadView": "raftkv.kv.backend",
    "Request": "raftkv.kv.commands",
    "Result": "raftkv.kv.commands",
    "SessionRecord": "raftkv.kv.sessions",
    "SessionResult": "raftkv.kv.commands",
    "SnapshotError": "raftkv.kv.errors",
    "Txn": "raftkv.kv.commands",
    "TxnResult": "raftkv.kv.commands",
    "WatchHub": "raftkv.kv.watch",
    "Write": "raftkv.kv.commands",
    "WriteTxn": "raftkv.kv.backend",
    "decode_command": "raftkv.kv.commands",
    "decode_result": "raftkv.kv.commands",
    "encode_command": "raftkv.kv.commands",
    "encode_result": "raftkv.kv.commands",
    "key_in_range": "raftkv.kv.keys",
    "prefix_end": "raftkv.kv.keys",
    "stamp": "raftkv.kv.commands",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftkv.kv' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
