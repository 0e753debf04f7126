"""The multi-version store (etcd's MVCC): reads at past revisions, Range options in etcd's order, compaction,
watch events from the durable history, snapshots that carry the history. Over both backends."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from raftkv.kv import (
    FROM_KEY,
    Backend,
    Compacted,
    DeleteRange,
    ErrorCode,
    ErrorResult,
    KeyValue,
    KVStateMachine,
    Put,
    Range,
    RangeResult,
    Txn,
)
from raftkv.kv.commands import Compact, CompactResult, Request, TxnResult
from raftkv.kv.errors import CommandError
from raftkv.kv.machine import COMPACT_STEP, SnapshotEnd, SnapshotHeader, SnapshotKVs, _frame
from raftkv.kv.watch import EventType
from tests.kv.kvtestlib import Feeder, entries


def _history(feed: Feeder) -> None:
    """Revisions 1..6: a=1 (1), b=1 (2), a=2 (3), delete b (4), c=1 and b=2 in one txn (5), a=3 (6)."""
    feed(Put(b"a", b"1"), Put(b"b", b"1"), Put(b"a", b"2"), DeleteRange(b"b"))
    feed(Txn(success=[Put(b"c", b"1"), Put(b"b", b"2")]), Put(b"a", b"3"))


def _values(result: object) -> list[tuple[bytes, bytes]]:
    assert isinstance(result, RangeResult), result
    return [(kv.key, kv.value) for kv in result.kvs]


def test_a_range_at_a_past_revision_sees_the_store_as_it_was(sm: KVStateMachine, feed: Feeder) -> None:
    _history(feed)
    everything = Range(b"\0", FROM_KEY)
    expected = {
        1: [(b"a", b"1")],
        2: [(b"a", b"1"), (b"b", b"1")],
        3: [(b"a", b"2"), (b"b", b"1")],
        4: [(b"a", b"2")],
        5: [(b"a", b"2"), (b"b", b"2"), (b"c", b"1")],
        6: [(b"a", b"3"), (b"b", b"2"), (b"c", b"1")],
    }
    for rev, want in expected.items():
        r = sm.read(Range(b"\0", FROM_KEY, revision=rev))
        assert _values(r) == want
        assert isinstance(r, RangeResult) and r.revision == 6, "the header revision is the store's (etcd)"
        assert _values(sm.read(Range(b"a", revision=rev))) == [kv for kv in want if kv[0] == b"a"]
        assert feed.one(Range(b"\0", FROM_KEY, revision=rev)) == r, "through the log: the same answer"
    assert sm.read(Range(b"b", revision=3)) == RangeResult((KeyValue(b"b", b"1", 2, 2, 1),), 1, False, 6)
    assert sm.read(Range(b"b", revision=5)) == RangeResult((KeyValue(b"b", b"2", 5, 5, 1),), 1, False, 6)
    assert sm.read(Range(b"\0", FROM_KEY, revision=5, count_only=True)).count == 3  # type: ignore[union-attr]
    assert sm.read(Range(b"\0", FROM_KEY, revision=4, limit=1)) == RangeResult(
        (KeyValue(b"a", b"2", 1, 3, 2),), 1, False, 6
    )
    assert sm.read(everything) == sm.read(Range(b"\0", FROM_KEY, revision=6))


def test_revisions_outside_the_history_are_refused_and_change_nothing(sm: KVStateMachine, feed: Feeder) -> None:
    _history(feed)
    future = sm.read(Range(b"a", revision=7))
    assert future == ErrorResult(
        ErrorCode.FUTURE_REVISION, "revision 7 is in the future: the store is at revision 6", 6
    )
    assert feed.one(Compact(4)) == CompactResult(4, 6)
    assert sm.compact_revision == 4
    compacted = sm.read(Range(b"a", revision=3))
    assert isinstance(compacted, ErrorResult) and compacted.code == ErrorCode.COMPACTED and compacted.revision == 4
    assert _values(sm.read(Range(b"\0", FROM_KEY, revision=4))) == [(b"a", b"2")], "the compaction revision reads"
    # A transaction reading outside the history fails whole, before any of its writes.
    bad = Txn(success=[Put(b"x", b"1"), Range(b"a", revision=2)])
    assert feed.one(bad) == compacted.__class__(ErrorCode.COMPACTED, compacted.message.replace("3", "2"), 4)
    assert sm.get(b"x") is None and sm.revision == 6
    # Compactions: at or below the last one, or in the future, are refused (etcd).
    assert feed.one(Compact(4)).code == ErrorCode.COMPACTED  # type: ignore[union-attr]
    assert feed.one(Compact(2)).code == ErrorCode.COMPACTED  # type: ignore[union-attr]
    assert feed.one(Compact(9)).code == ErrorCode.FUTURE_REVISION  # type: ignore[union-attr]
    assert sm.compact_revision == 4
    with pytest.raises(CommandError, match="compaction revision must be >= 1"):
        Compact(0)
    with pytest.raises(CommandError, match="revision must be >= 0"):
        Range(b"a", revision=-1)


def test_compaction_keeps_every_read_at_or_after_it_and_frees_the_rest_in_steps(
    sm: KVStateMachine, feed: Feeder
) -> None:
    n = 3 * COMPACT_STEP
    feed(*[Put(b"k", b"%d" % i) for i in range(n)], Put(b"other", b"x"))  # revisions 1..n+1
    before = {r: sm.read(Range(b"\0", FROM_KEY, revision=r)) for r in (n - 1, n, n + 1)}
    with sm.backend.read() as view:
        assert view.history_size() == n + 1
    feed(Compact(n - 1))
    sizes = []
    for _ in range(4):
        with sm.backend.read() as view:
            sizes.append(view.history_size())
        feed.noop()  # every applied batch examines at most COMPACT_STEP records
    # The first batch (the compaction's own) examined a step (the first record has no predecessor to remove),
    # each following batch another, down to what is kept: k at n-1 and n, and other.
    assert sizes == [n + 2 - COMPACT_STEP, n + 2 - 2 * COMPACT_STEP, 3, 3]
    assert {r: sm.read(Range(b"\0", FROM_KEY, revision=r)) for r in before} == before


@pytest.mark.parametrize(
    ("options", "keys"),
    [
        ({}, [b"a", b"b", b"c", b"d"]),
        ({"sort_order": "descend"}, [b"d", b"c", b"b", b"a"]),
        ({"sort_target": "mod"}, [b"d", b"c", b"b", b"a"]),  # "none" with a target other than key: ascending
        ({"sort_target": "mod", "sort_order": "descend"}, [b"a", b"b", b"c", b"d"]),
        ({"sort_target": "create", "sort_order": "ascend"}, [b"a", b"b", b"c", b"d"]),
        ({"sort_target": "version", "sort_order": "descend"}, [b"a", b"b", b"c", b"d"]),  # ties keep key order
        ({"sort_target": "value"}, [b"c", b"b", b"d", b"a"]),
        ({"min_mod_revision": 6}, [b"a", b"b", b"c"]),
        ({"max_mod_revision": 6}, [b"c", b"d"]),
        ({"min_create_revision": 2, "max_create_revision": 3}, [b"b", b"c"]),
        ({"sort_order": "descend", "limit": 2}, [b"d", b"c"]),
        ({"min_mod_revision": 6, "limit": 2}, [b"a", b"b"]),
    ],
)
def test_range_options_apply_in_etcds_order(
    sm: KVStateMachine, feed: Feeder, options: dict[str, object], keys: list[bytes]
) -> None:
    # Created a, b, c, d (1-4); then written d, c, b, a (5-8), with values that sort c < b < d < a.
    feed(*[Put(k, b"0") for k in (b"a", b"b", b"c", b"d")])
    feed(Put(b"d", b"m"), Put(b"c", b"a"), Put(b"b", b"b"), Put(b"a", b"z"))
    r = sm.read(Range(b"a", FROM_KEY, **options))  # type: ignore[arg-type]
    assert isinstance(r, RangeResult)
    assert [kv.key for kv in r.kvs] == keys
    assert r.count == 4, "count: every key of the range, whatever the filters and the limit (etcd)"
    filtered = len(sm.read(Range(b"a", FROM_KEY, **{**options, "limit": 0})).kvs)  # type: ignore[arg-type, union-attr]
    assert r.more == (len(keys) < filtered)


def test_keys_only_drops_values_after_a_sort_by_value(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"a", b"2"), Put(b"b", b"1"))
    r = sm.read(Range(b"a", FROM_KEY, sort_target="value", keys_only=True))
    assert isinstance(r, RangeResult)
    assert [(kv.key, kv.value) for kv in r.kvs] == [(b"b", b""), (b"a", b"")]
    with pytest.raises(CommandError, match="sort target must be one of key, version, create, mod, value"):
        Range(b"a", sort_target="size")  # type: ignore[arg-type]
    with pytest.raises(CommandError, match="sort order must be one of none, ascend, descend"):
        Range(b"a", sort_order="up")  # type: ignore[arg-type]


def test_history_events_are_the_live_events(sm: KVStateMachine, feed: Feeder) -> None:
    live = []
    sm.watch.add_listener(live.extend)
    _history(feed)
    feed(DeleteRange(b"a", FROM_KEY))
    stored, following = sm.history_events(b"\0", FROM_KEY, 1)
    assert following == sm.revision + 1
    assert stored == live, "the same events, prev_kv included, as the watchers got live"
    assert [e.type for e in stored if e.revision == 7] == [EventType.DELETE] * 3
    # Paged by whole revisions: a page never splits one.
    pages, start = [], 1
    while start <= sm.revision:
        page, start = sm.history_events(b"\0", FROM_KEY, start, max_records=2)
        pages.append([e.revision for e in page])
    assert [r for p in pages for r in p] == [e.revision for e in live]
    flat = [p for p in pages if p]
    assert all(a[-1] < b[0] for a, b in itertools.pairwise(flat)), f"a revision split across pages: {pages}"
    assert max(len(p) for p in pages) == 3, "the txn's three deletes at revision 7 came in one page of two records"
    only_b, _ = sm.history_events(b"b", None, 3)
    assert [(e.type, e.kv.value, e.prev_kv) for e in only_b] == [
        (EventType.DELETE, b"", KeyValue(b"b", b"1", 2, 2, 1)),
        (EventType.PUT, b"2", None),
        (EventType.DELETE, b"", KeyValue(b"b", b"2", 5, 5, 1)),
    ]
    feed(Compact(5))
    with pytest.raises(Compacted, match="revision 4 is compacted; the oldest revision still held is 5"):
        sm.history_events(b"\0", FROM_KEY, 4)
    with pytest.raises(Compacted):
        sm.watch.events_since(b"\0", FROM_KEY, 4)  # the in-memory window obeys the compaction too
    assert [e.revision for e in sm.history_events(b"\0", FROM_KEY, 5)[0]] == [5, 5, 6, 7, 7, 7]


def test_a_snapshot_carries_the_history_and_equal_histories_give_equal_bytes(
    sm: KVStateMachine, feed: Feeder, make_backend: Callable[[], Backend]
) -> None:
    _history(feed)
    feed(Compact(3))
    data = sm.snapshot()
    other = KVStateMachine(make_backend())
    other.restore(data)
    assert other.compact_revision == 3 and other.revision == 6
    for rev in range(3, 7):
        q = Range(b"\0", FROM_KEY, revision=rev)
        assert other.read(q) == sm.read(q)
    assert other.history_events(b"\0", FROM_KEY, 3) == sm.history_events(b"\0", FROM_KEY, 3)
    assert other.snapshot() == data
    # Physical removal lags differently on two nodes; the images do not.
    lagging = KVStateMachine(make_backend())
    lagging.apply(entries(1, [Put(b"a", b"1"), Put(b"b", b"1"), Put(b"a", b"2"), DeleteRange(b"b")]))
    lagging.apply(entries(5, [Txn(success=[Put(b"c", b"1"), Put(b"b", b"2")]), Put(b"a", b"3")]))
    lagging.apply(entries(7, [Compact(3)]))
    assert lagging.snapshot() == data


def test_an_image_without_history_restores_compacted_at_its_revision(
    sm: KVStateMachine, make_backend: Callable[[], Backend]
) -> None:
    from raftkv.kv import Meta

    kvs = [KeyValue(b"a", b"1", 1, 3, 2), KeyValue(b"b", b"1", 2, 3, 1)]  # a and b last written together
    image = (
        _frame(SnapshotHeader(3, Meta(applied_index=9, revision=4, clock_ms=0)))
        + _frame(SnapshotKVs(kvs))
        + _frame(SnapshotEnd(2, 0))
    )
    sm.restore(image)
    assert sm.revision == 4 and sm.compact_revision == 4
    assert sm.read(Range(b"\0", FROM_KEY)).kvs == tuple(kvs)  # type: ignore[union-attr]
    assert sm.read(Range(b"a", revision=3)).code == ErrorCode.COMPACTED  # type: ignore[union-attr]
    assert sm.read(Range(b"\0", FROM_KEY, revision=4)).kvs == tuple(kvs)  # type: ignore[union-attr]


def test_a_compaction_inside_a_session_is_applied_once(sm: KVStateMachine, feed: Feeder) -> None:
    from raftkv.kv import OpenSession

    feed(Put(b"a", b"1"), Put(b"a", b"2"))
    (opened,) = feed(OpenSession(ttl_ms=10_000))
    sid = opened.session_id  # type: ignore[union-attr]
    first = feed.one(Request(sid, 1, 0, Compact(2)))
    assert first == CompactResult(2, 2)
    assert feed.one(Request(sid, 1, 0, Compact(2))) == first, "a retry gets the first answer, not 'compacted'"
    assert isinstance(feed.one(Txn()), TxnResult)
