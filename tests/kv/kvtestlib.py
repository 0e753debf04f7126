"""Helpers for the key-value tests: backend factories and a log feeder for state machines."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from raftkv.kv import Backend, Command, KVStateMachine, MemoryBackend, Result, encode_command
from raftkv.raft.types import Entry, EntryType, Index, Term
from raftkv.storage.kv_lmdb import LMDBBackend

BACKEND_FACTORIES: dict[str, Callable[[Path], Backend]] = {
    "memory": lambda _path: MemoryBackend(),
    "lmdb": lambda path: LMDBBackend(path / "kv.lmdb"),
}


def entries(first_index: int, items: Iterable[Command | bytes], term: int = 1) -> list[Entry]:
    """Log entries carrying ``items`` (commands are encoded; bytes are used as is) from ``first_index`` on."""
    out = []
    for k, item in enumerate(items):
        data = item if isinstance(item, bytes) else encode_command(item)
        out.append(Entry(Term(term), Index(first_index + k), data))
    return out


class Feeder:
    """Appends commands to an imaginary log and applies them: ``feed(cmd, ...)`` is one batch."""

    def __init__(self, sm: KVStateMachine) -> None:
        self.sm = sm
        self.next_index = sm.applied_index + 1

    def __call__(self, *items: Command | bytes) -> list[Result | None]:
        batch = entries(self.next_index, items)
        self.next_index += len(batch)
        return self.sm.apply(batch)

    def one(self, item: Command | bytes) -> Result | None:
        return self(item)[0]

    def noop(self) -> None:
        e = Entry(Term(1), Index(self.next_index), b"", EntryType.NOOP)
        self.next_index += 1
        assert self.sm.apply([e]) == [None]


def split(seq: Sequence[Entry], cuts: Iterable[int]) -> list[Sequence[Entry]]:
    """``seq`` cut into batches at the given positions (sorted, deduplicated, clipped)."""
    points = sorted({c for c in cuts if 0 < c < len(seq)})
    out, prev = [], 0
    for p in [*points, len(seq)]:
        if p > prev:
            out.append(seq[prev:p])
        prev = p
    return out
