"""raftkv: a Raft consensus library and a replicated key-value store."""

__version__ = "0.1.0"
