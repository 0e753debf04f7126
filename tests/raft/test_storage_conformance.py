"""One conformance suite for every ``LogStorage`` implementation.

Each backend registers a factory in ``BACKENDS``: ``make(tmp_path)`` returns a fresh storage and
``reopen(storage, tmp_path)`` returns the storage as a restarted process would see it after ``sync()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raftkv.raft.errors import EntryUnavailable, InvariantViolation, LogCompacted
from raftkv.raft.membership import encode_conf
from raftkv.raft.storage import LogStorage, MemoryStorage
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Index, Member, NodeId, SnapshotMeta, Term


@dataclass
class Backend:
    make: Callable[[Path], Any]
    reopen: Callable[[Any, Path], Any]


BACKENDS: dict[str, Backend] = {
    "memory": Backend(make=lambda _p: MemoryStorage(), reopen=lambda s, _p: s),
}

try:  # the durable write-ahead log registers itself once it exists
    from raftkv.storage.wal import WAL

    def _close_and_reopen(storage: Any, path: Path) -> Any:
        storage.close()
        return WAL.open(path / "wal")

    BACKENDS["wal"] = Backend(make=lambda p: WAL.open(p / "wal"), reopen=_close_and_reopen)
except ImportError:  # pragma: no cover - before the storage package lands
    pass


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


def ents(first: int, terms: list[int], payload: str = "") -> list[Entry]:
    return [Entry(Term(t), Index(first + k), f"{payload}{first + k}".encode()) for k, t in enumerate(terms)]


def test_empty_storage(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    hs, snap = s.initial_state()
    assert hs == HardState()
    assert snap.index == 0
    assert s.first_index() == 1
    assert s.last_index() == 0
    assert s.term(Index(0)) == 0
    with pytest.raises(EntryUnavailable):
        s.term(Index(1))


def test_append_and_read(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(ents(1, [1, 1, 2, 3]))
    assert (s.first_index(), s.last_index()) == (1, 4)
    assert [s.term(Index(i)) for i in range(0, 5)] == [0, 1, 1, 2, 3]
    assert s.entries(Index(2), Index(4)) == ents(1, [1, 1, 2, 3])[1:3]
    with pytest.raises(EntryUnavailable):
        s.entries(Index(2), Index(6))


def test_entries_respect_max_bytes_but_return_at_least_one(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append([Entry(Term(1), Index(i), b"x" * 100) for i in range(1, 11)])
    assert len(s.entries(Index(1), Index(11), max_bytes=1)) == 1
    three = s.entries(Index(1), Index(11), max_bytes=3 * 116)
    assert [e.index for e in three] == [1, 2, 3]


def test_append_overwrites_conflicting_suffix(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(ents(1, [1, 1, 1, 1, 1], "old"))
    s.append(ents(3, [2, 2], "new"))
    assert s.last_index() == 4
    got = s.entries(Index(1), Index(5))
    assert got == ents(1, [1, 1], "old") + ents(3, [2, 2], "new")


def test_append_must_be_contiguous(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(ents(1, [1, 1]))
    with pytest.raises(InvariantViolation):
        s.append(ents(4, [1]))


def test_hard_state_and_log_survive_reopen(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(ents(1, [1, 2, 2]))
    s.set_hard_state(HardState(Term(2), NodeId(3), Index(2)))
    s.sync()
    s = backend.reopen(s, tmp_path)
    hs, _ = s.initial_state()
    assert hs == HardState(Term(2), NodeId(3), Index(2))
    assert s.entries(Index(1), Index(4)) == ents(1, [1, 2, 2])


def test_overwrite_survives_reopen(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(ents(1, [1, 1, 1, 1], "old"))
    s.append(ents(2, [3], "new"))
    s.sync()
    s = backend.reopen(s, tmp_path)
    assert s.last_index() == 2
    assert s.entries(Index(1), Index(3)) == ents(1, [1], "old") + ents(2, [3], "new")


def test_compaction_keeps_boundary_term(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(ents(1, [1, 1, 2, 2, 3]))
    s.compact(Index(3))
    assert (s.first_index(), s.last_index()) == (4, 5)
    assert s.term(Index(3)) == 2
    with pytest.raises(LogCompacted):
        s.term(Index(2))
    with pytest.raises(LogCompacted):
        s.entries(Index(3), Index(5))
    assert s.entries(Index(4), Index(6)) == ents(1, [1, 1, 2, 2, 3])[3:]
    s.append(ents(6, [3]))
    s.sync()
    s = backend.reopen(s, tmp_path)
    assert (s.first_index(), s.last_index()) == (4, 6)
    assert s.term(Index(3)) == 2


def test_cannot_overwrite_compacted_entries(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(ents(1, [1, 1, 1]))
    s.compact(Index(2))
    with pytest.raises(InvariantViolation):
        s.append(ents(2, [2]))


def test_apply_snapshot_keeps_a_matching_suffix(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(ents(1, [1, 1, 2, 2, 2]))
    s.apply_snapshot(SnapshotMeta(Index(3), Term(2), ConfState.of_voters((NodeId(1),))))
    assert (s.first_index(), s.last_index()) == (4, 5)
    assert s.term(Index(3)) == 2
    assert s.entries(Index(4), Index(6)) == ents(1, [1, 1, 2, 2, 2])[3:]


def test_apply_snapshot_discards_a_conflicting_log_for_good(backend: Backend, tmp_path: Path) -> None:
    """§7: a log that does not hold the snapshot's last entry is discarded entirely — also after a restart."""
    s: LogStorage = backend.make(tmp_path)
    s.append(ents(1, [1, 1, 1, 1, 1], "stale"))
    s.apply_snapshot(SnapshotMeta(Index(3), Term(4), ConfState.of_voters((NodeId(1),))))
    assert (s.first_index(), s.last_index()) == (4, 3)
    assert s.term(Index(3)) == 4
    s = backend.reopen(s, tmp_path)
    assert (s.first_index(), s.last_index()) == (4, 3), "a discarded suffix must not come back after a restart"
    _, boundary = s.initial_state()
    assert (boundary.index, boundary.term) == (3, 4)
    s.append(ents(4, [4], "new"))
    assert s.entries(Index(4), Index(5)) == ents(4, [4], "new")


# --- configuration entries and the boundary's configuration ---------------------------------------------------

CONF_A = ConfState((Member(NodeId(1), "h1:7001", "h1:8001"), Member(NodeId(2), "h2:7001", "", learner=True)))
CONF_B = ConfState((Member(NodeId(1), "h1:7001", "h1:8001"), Member(NodeId(2), "h2:7001", "h2:8001")))
CONF_C = ConfState((Member(NodeId(2), "h2:7001", "h2:8001"), Member(NodeId(3), "h3:7001", "", learner=True)))


def with_confs(first: int, terms: list[int], confs: dict[int, ConfState]) -> list[Entry]:
    """``ents`` with configuration entries at the indexes of ``confs``."""
    return [
        Entry(e.term, e.index, encode_conf(confs[e.index]), EntryType.CONF_CHANGE) if e.index in confs else e
        for e in ents(first, terms)
    ]


def test_conf_indexes_follow_appends_and_overwrites(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    assert list(s.conf_indexes()) == []
    s.append(with_confs(1, [1, 1, 1, 1, 1, 1], {2: CONF_A, 4: CONF_B, 6: CONF_C}))
    assert list(s.conf_indexes()) == [2, 4, 6]
    s.append(ents(4, [2]))  # overwrites 4..6 with a plain entry
    assert list(s.conf_indexes()) == [2]
    s.append(with_confs(5, [2, 2], {6: CONF_C}))
    assert list(s.conf_indexes()) == [2, 6]
    s.sync()
    s = backend.reopen(s, tmp_path)
    assert list(s.conf_indexes()) == [2, 6]
    assert [e.type for e in s.entries(Index(1), Index(7))].count(EntryType.CONF_CHANGE) == 2


def test_compaction_gives_the_boundary_the_configuration_at_its_index(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(with_confs(1, [1] * 8, {2: CONF_A, 5: CONF_B}))
    s.compact(Index(1))  # below every configuration entry: the boundary keeps its own (none yet)
    assert s.initial_state()[1].conf == ConfState()
    s.compact(Index(3))
    assert s.initial_state()[1] == SnapshotMeta(Index(3), Term(1), CONF_A)
    assert list(s.conf_indexes()) == [5]
    s.compact(Index(4))  # no configuration entry in 4..4: still the one from index 2
    assert s.initial_state()[1].conf == CONF_A
    s.sync()
    s = backend.reopen(s, tmp_path)
    assert s.initial_state()[1] == SnapshotMeta(Index(4), Term(1), CONF_A)
    assert list(s.conf_indexes()) == [5]
    s.compact(Index(5))  # exactly at a configuration entry
    assert (s.initial_state()[1].conf, list(s.conf_indexes())) == (CONF_B, [])
    s.sync()
    s = backend.reopen(s, tmp_path)
    assert s.initial_state()[1] == SnapshotMeta(Index(5), Term(1), CONF_B)
    s.append(with_confs(9, [2, 2, 2], {9: CONF_A, 10: CONF_C}))
    s.compact(Index(11))  # two configuration entries at or below 11: the latest one counts
    assert (s.initial_state()[1].conf, list(s.conf_indexes())) == (CONF_C, [])


def test_apply_snapshot_sets_the_configuration_and_keeps_later_conf_entries(backend: Backend, tmp_path: Path) -> None:
    s: LogStorage = backend.make(tmp_path)
    s.append(with_confs(1, [1] * 6, {2: CONF_A, 5: CONF_B}))
    s.apply_snapshot(SnapshotMeta(Index(3), Term(1), CONF_C))  # matches: 4..6 stay, with the entry at 5
    assert s.initial_state()[1] == SnapshotMeta(Index(3), Term(1), CONF_C)
    assert list(s.conf_indexes()) == [5]
    s = backend.reopen(s, tmp_path)
    assert s.initial_state()[1] == SnapshotMeta(Index(3), Term(1), CONF_C)
    assert list(s.conf_indexes()) == [5]
    s.apply_snapshot(SnapshotMeta(Index(4), Term(9), CONF_A))  # conflicts: every entry goes, 5 with it
    assert list(s.conf_indexes()) == []
    s = backend.reopen(s, tmp_path)
    assert (s.initial_state()[1].conf, list(s.conf_indexes())) == (CONF_A, [])
