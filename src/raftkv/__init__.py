"""raftkv: a Raft consensus library and a replicated key-value store.

``raftkv.connect([...])`` / ``raftkv.connect_sync([...])`` give a key-value client; ``raftkv.RaftNode``
replicates your own state machine. These are imported lazily, so that ``import raftkv.raft`` (the pure core)
does not load the network stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "connect": "raftkv.client",
    "connect_sync": "raftkv.client",
    "Client": "raftkv.client",
    "SyncClient": "raftkv.client",
    "Watch": "raftkv.client",
    "Unavailable": "raftkv.errors",
    "SessionExpired": "raftkv.errors",
    "Compacted": "raftkv.errors",
    "FutureRevision": "raftkv.errors",
    "LeaseNotFound": "raftkv.errors",
    "AuthError": "raftkv.errors",
    "PermissionDenied": "raftkv.errors",
    "WatchCancelled": "raftkv.errors",
    "TxnFailed": "raftkv.errors",
    "Timeout": "raftkv.errors",
    "NotLeader": "raftkv.errors",
    "ProposalDropped": "raftkv.errors",
    "RaftError": "raftkv.errors",
    "RaftNode": "raftkv.runtime.node",
    "NodeConfig": "raftkv.runtime.config",
    "KVServer": "raftkv.kvserver.app",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftkv' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
