"""The replicated key-value store's state machine: pure, deterministic, no I/O. See ``machine.py``.

Commands and results (``commands.py``) follow etcd v3's data model; client sessions give exactly-once writes
(``sessions.py``, Raft dissertation §6.3); watch events are kept in a bounded history (``watch.py``). The
state machine runs over a small backend protocol (``backend.py``) with an in-memory implementation here and a
durable LMDB one in ``raftkv.storage.kv_lmdb``. ``docs/kv.md`` has the whole story.
"""

from raftkv.kv.backend import Backend, MemoryBackend, Meta, ReadView, WriteTxn
from raftkv.kv.commands import (
    CloseSession,
    Command,
    Compare,
    DeleteRange,
    DeleteResult,
    ErrorResult,
    KeepAlive,
    KeyValue,
    Op,
    OpenSession,
    OpResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Result,
    SessionResult,
    Txn,
    TxnResult,
    Write,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
    stamp,
)
from raftkv.kv.errors import CommandError, Compacted, ErrorCode, KVError, SnapshotError
from raftkv.kv.keys import FROM_KEY, MAX_KEY_BYTES, MAX_VALUE_BYTES, key_in_range, prefix_end
from raftkv.kv.machine import KVStateMachine
from raftkv.kv.sessions import SessionRecord
from raftkv.kv.watch import Event, EventType, WatchHub

__all__ = [
    "FROM_KEY",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "Backend",
    "CloseSession",
    "Command",
    "CommandError",
    "Compacted",
    "Compare",
    "DeleteRange",
    "DeleteResult",
    "ErrorCode",
    "ErrorResult",
    "Event",
    "EventType",
    "KVError",
    "KVStateMachine",
    "KeepAlive",
    "KeyValue",
    "MemoryBackend",
    "Meta",
    "Op",
    "OpResult",
    "OpenSession",
    "Put",
    "PutResult",
    "Range",
    "RangeResult",
    "ReadView",
    "Request",
    "Result",
    "SessionRecord",
    "SessionResult",
    "SnapshotError",
    "Txn",
    "TxnResult",
    "WatchHub",
    "Write",
    "WriteTxn",
    "decode_command",
    "decode_result",
    "encode_command",
    "encode_result",
    "key_in_range",
    "prefix_end",
    "stamp",
]
