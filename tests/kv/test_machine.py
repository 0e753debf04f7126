"""The state machine's contract with the runtime: one result per entry, atomic batches, snapshots."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import pytest

from raftkv.kv import (
    Backend,
    ErrorCode,
    ErrorResult,
    Event,
    KeyValue,
    KVStateMachine,
    MemoryBackend,
    OpenSession,
    Put,
    PutResult,
    Range,
    ReadView,
    Request,
    SessionResult,
    SnapshotError,
    WriteTxn,
)
from raftkv.kv.machine import SNAPSHOT_BATCH_KEYS, SNAPSHOT_FORMAT, SnapshotEnd, SnapshotHeader, SnapshotHistory, _frame
from raftkv.raft.types import Entry, EntryType, Index, Term
from raftkv.runtime.statemachine import StateMachine
from tests.kv.kvtestlib import Feeder, entries


def test_it_is_a_runtime_state_machine(sm: KVStateMachine) -> None:
    as_protocol: StateMachine = sm
    assert as_protocol.apply([]) == []


def test_one_result_per_entry_including_no_ops_and_garbage(sm: KVStateMachine) -> None:
    batch = [
        *entries(1, [Put(b"a", b"1")]),
        Entry(Term(1), Index(2), b"", EntryType.NOOP),
        Entry(Term(1), Index(3), b""),  # an empty normal entry carries no command
        *entries(4, [b"\x00garbage", Put(b"b", b"1")]),
    ]
    results = sm.apply(batch)
    assert results[:3] == [PutResult(1), None, None]
    assert isinstance(results[3], ErrorResult) and results[3].code is ErrorCode.INVALID_COMMAND
    assert results[4] == PutResult(2)
    assert sm.applied_index == 5
    assert sm.revision == 2


def test_entries_already_applied_are_skipped(sm: KVStateMachine) -> None:
    sm.apply(entries(1, [Put(b"a", b"1"), Put(b"a", b"2")]))
    again = sm.apply(entries(1, [Put(b"a", b"1"), Put(b"a", b"2"), Put(b"a", b"3")]))
    assert again == [None, None, PutResult(3)]
    assert sm.get(b"a") == KeyValue(b"a", b"3", 1, 3, 3)


def test_gaps_in_indexes_are_fine(sm: KVStateMachine) -> None:
    # The runtime may leave out entries that carry no command (a leader's no-op).
    assert sm.apply([*entries(1, [Put(b"a", b"1")]), *entries(5, [OpenSession(10)])]) == [
        PutResult(1),
        SessionResult(5),
    ]
    assert sm.applied_index == 5


class FailingTxn:
    """A write transaction whose commit fails like a full disk (after LMDB-style automatic abort)."""

    def __init__(self, inner: WriteTxn) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def commit(self) -> None:
        self.inner.abort()
        raise OSError("disk full (simulated)")

    def abort(self) -> None:
        pass  # already aborted by the failed commit


class FailingBackend:
    """Wraps a backend; with ``fail_commit`` set, the next commit fails."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.fail_commit = False

    def read(self) -> AbstractContextManager[ReadView]:
        return self.inner.read()

    def begin(self) -> WriteTxn:
        txn = self.inner.begin()
        if self.fail_commit:
            self.fail_commit = False
            return FailingTxn(txn)  # type: ignore[return-value]
        return txn

    def close(self) -> None:
        self.inner.close()


def test_a_failed_commit_rolls_the_whole_batch_back(make_backend: Callable[[], Backend]) -> None:
    backend = FailingBackend(make_backend())
    sm = KVStateMachine(backend)
    feed = Feeder(sm)
    events: list[Event] = []
    sm.watch.add_listener(events.extend)
    feed(OpenSession(100, time_ms=5), Request(1, 1, 5, Put(b"a", b"1")))
    before = (sm.snapshot(), sm.applied_index, sm.revision, sm.clock_ms, sm.sessions(), len(events))

    backend.fail_commit = True
    batch = entries(3, [Request(1, 2, 50, Put(b"a", b"2")), OpenSession(7, time_ms=60), Put(b"b", b"1")])
    with pytest.raises(OSError, match="disk full"):
        sm.apply(batch)
    assert (sm.snapshot(), sm.applied_index, sm.revision, sm.clock_ms, sm.sessions(), len(events)) == before

    # The runtime retries the same entries once the cause is gone: they apply as if the failure never happened.
    assert sm.apply(batch) == [PutResult(2), SessionResult(4), PutResult(3)]
    assert sm.get(b"a") == KeyValue(b"a", b"2", 1, 2, 2)
    assert [e.revision for e in events] == [1, 2, 3]


def test_snapshot_and_restore_move_the_whole_state_between_backends(make_backend: Callable[[], Backend]) -> None:
    source = KVStateMachine(make_backend())
    feed = Feeder(source)
    feed(OpenSession(1000, time_ms=10), Request(1, 1, 20, Put(b"a", b"1")), Put(b"b\xff", b"2"), Put(b"a", b"3"))
    snap = source.snapshot()

    for target_backend in (make_backend(), MemoryBackend()):
        target = KVStateMachine(target_backend)
        Feeder(target)(Put(b"stale", b"x"), OpenSession(5))  # whatever was there goes
        target.restore(snap)
        assert target.snapshot() == snap
        assert (target.applied_index, target.revision, target.clock_ms) == (4, 3, 20)
        assert target.sessions() == source.sessions()
        assert target.read(Range(b"\0", b"\0")) == source.read(Range(b"\0", b"\0"))
        assert target.watch.oldest_revision == 4  # history restarts at the snapshot
        # A retry of the session's last request is still answered from the snapshot's table.
        assert Feeder(target).one(Request(1, 1, 20, Put(b"a", b"1"))) == PutResult(1)


def test_equal_states_have_equal_snapshots_and_different_states_do_not(
    make_backend: Callable[[], Backend],
) -> None:
    one, two = KVStateMachine(make_backend()), KVStateMachine(make_backend())
    log = entries(1, [Put(b"a", b"1"), Put(b"b", b"1"), OpenSession(5)])
    one.apply(log)
    two.apply(log[:1])
    two.apply(log[1:])
    assert one.snapshot() == two.snapshot()
    Feeder(two)(Put(b"a", b"1"))
    assert one.snapshot() != two.snapshot()


@pytest.mark.parametrize("data", [b"", b"\xc1", b"KVSnapshot", b"\x01\x00\x00\x00\xc1"])
def test_restore_refuses_what_is_not_a_snapshot(sm: KVStateMachine, feed: Feeder, data: bytes) -> None:
    feed(Put(b"a", b"1"))
    with pytest.raises(SnapshotError):
        sm.restore(data)
    assert sm.get(b"a") is not None


def test_restore_refuses_an_unknown_format(sm: KVStateMachine) -> None:
    from raftkv.kv import Meta

    with pytest.raises(SnapshotError, match="format 99"):
        sm.restore(_frame(SnapshotHeader(99, Meta())) + _frame(SnapshotEnd(0, 0)))


def test_a_large_state_streams_in_frames_and_round_trips(make_backend: Callable[[], Backend]) -> None:
    source = KVStateMachine(make_backend())
    n = 2 * SNAPSHOT_BATCH_KEYS + 7  # three key frames, the last one short
    source.apply(entries(1, [Put(f"k{i:05d}".encode(), b"v" * (i % 50)) for i in range(n)]))
    with source.open_snapshot() as image:
        assert image.index == n
        chunks = list(image.chunks())
    assert len(chunks) == 1 + 3 + 1  # header, keys, end (no sessions)
    target = KVStateMachine(make_backend())
    target.restore_from(io.BytesIO(b"".join(chunks)))
    assert target.snapshot() == b"".join(chunks)
    assert target.read(Range(b"k", b"l", count_only=True)).count == n


def test_restore_refuses_a_truncated_or_inconsistent_stream_and_keeps_the_old_state(
    sm: KVStateMachine, feed: Feeder, make_backend: Callable[[], Backend]
) -> None:
    feed(Put(b"mine", b"1"))
    source = KVStateMachine(make_backend())
    source.apply(entries(1, [Put(f"k{i:05d}".encode(), b"v") for i in range(SNAPSHOT_BATCH_KEYS + 1)]))
    data = source.snapshot()
    for cut in (len(data) - 1, len(data) - 10, len(data) // 2, 10):
        with pytest.raises(SnapshotError, match="truncated"):
            sm.restore(data[:cut])
    from raftkv.kv import Meta

    short = _frame(SnapshotHeader(SNAPSHOT_FORMAT, Meta())) + _frame(SnapshotHistory([])) + _frame(SnapshotEnd(5, 0))
    with pytest.raises(SnapshotError, match="announces 5 keys"):
        sm.restore(short)
    assert sm.get(b"mine") is not None and sm.get(b"k00000") is None


def test_listeners_see_batches_in_order(sm: KVStateMachine, feed: Feeder) -> None:
    batches: list[Sequence[Event]] = []
    sm.watch.add_listener(batches.append)
    feed(Put(b"a", b"1"))
    feed(Put(b"a", b"2"), Put(b"b", b"1"))
    assert [[e.revision for e in b] for b in batches] == [[1], [2, 3]]
