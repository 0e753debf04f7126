"""Watch events: order, prefix filtering, replay from a revision, bounded history and Compacted."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.kv import (
    FROM_KEY,
    Backend,
    Compacted,
    DeleteRange,
    Event,
    EventType,
    KeyValue,
    KVStateMachine,
    Put,
    Txn,
    WatchHub,
    prefix_end,
)
from tests.kv.kvtestlib import Feeder

PUT, DELETE = EventType.PUT, EventType.DELETE


def test_events_of_puts_and_deletes(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"a", b"1"), Put(b"a", b"2"), DeleteRange(b"a"), Put(b"a", b"3"))
    assert sm.watch.events_since(b"a", None, 1) == [
        Event(PUT, KeyValue(b"a", b"1", 1, 1, 1), None),
        Event(PUT, KeyValue(b"a", b"2", 1, 2, 2), KeyValue(b"a", b"1", 1, 1, 1)),
        Event(DELETE, KeyValue(b"a", b"", 0, 3, 0), KeyValue(b"a", b"2", 1, 2, 2)),
        Event(PUT, KeyValue(b"a", b"3", 4, 4, 1), None),
    ]
    assert [e.revision for e in sm.watch.events_since(b"a", None, 1)] == [1, 2, 3, 4]


def test_one_revision_may_carry_several_events_in_write_order(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"b", b"1"), Put(b"a", b"1"), Put(b"c", b"1"))
    feed(Txn([], [Put(b"z", b"1"), DeleteRange(b"a", b"c"), Put(b"a", b"2")], []))
    events = sm.watch.events_since(b"\0", FROM_KEY, 4)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        (PUT, b"z", 4),
        (DELETE, b"a", 4),
        (DELETE, b"b", 4),
        (PUT, b"a", 4),
    ]


def test_filtering_by_key_prefix_and_range(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"app/1", b"x"), Put(b"apple", b"x"), Put(b"app/2", b"x"), Put(b"b", b"x"), Put(b"app0", b"x"))
    feed(DeleteRange(b"app/1"))

    def keys(key: bytes, end: bytes | None, start: int = 1) -> list[tuple[EventType, bytes]]:
        return [(e.type, e.kv.key) for e in sm.watch.events_since(key, end, start)]

    assert keys(b"app/", prefix_end(b"app/")) == [(PUT, b"app/1"), (PUT, b"app/2"), (DELETE, b"app/1")]
    assert keys(b"app", prefix_end(b"app")) == [
        (PUT, b"app/1"),
        (PUT, b"apple"),
        (PUT, b"app/2"),
        (PUT, b"app0"),
        (DELETE, b"app/1"),
    ]
    assert keys(b"b", None) == [(PUT, b"b")]
    assert keys(b"app0", FROM_KEY) == [(PUT, b"apple"), (PUT, b"b"), (PUT, b"app0")]
    assert keys(b"a", b"app0") == [(PUT, b"app/1"), (PUT, b"app/2"), (DELETE, b"app/1")]


def test_replay_starts_at_the_requested_revision(sm: KVStateMachine, feed: Feeder) -> None:
    for i in range(10):
        feed(Put(b"k", str(i).encode()))
    assert [e.revision for e in sm.watch.events_since(b"k", None, 7)] == [7, 8, 9, 10]
    assert sm.watch.events_since(b"k", None, 11) == []  # the future: nothing yet
    assert sm.watch.events_since(b"k", None, 0) == []  # 0: from now on (etcd)


def test_history_is_bounded_by_whole_revisions(make_backend: Callable[[], Backend]) -> None:
    sm = KVStateMachine(make_backend(), watch_history_events=5)
    feed = Feeder(sm)
    feed(Put(b"a", b"1"), Put(b"b", b"1"), Put(b"c", b"1"))  # revisions 1..3
    feed(Txn([], [Put(b"a", b"2"), Put(b"b", b"2"), Put(b"c", b"2")], []))  # revision 4: 3 events
    # 6 events held > 5: revision 1 goes; revisions 2, 3 and the whole of 4 stay.
    assert sm.watch.oldest_revision == 2
    assert len(sm.watch) == 5
    assert [e.revision for e in sm.watch.events_since(b"\0", FROM_KEY, 2)] == [2, 3, 4, 4, 4]
    with pytest.raises(Compacted) as info:
        sm.watch.events_since(b"\0", FROM_KEY, 1)
    assert info.value.oldest_revision == 2
    assert info.value.requested_revision == 1
    feed(Put(b"d", b"1"))  # revision 5: 6 events again; revision 2 goes
    assert sm.watch.oldest_revision == 3
    feed(Put(b"e", b"1"))  # revision 6: revision 3 goes, leaving 4 (3 events), 5, 6
    assert sm.watch.oldest_revision == 4
    assert len(sm.watch) == 5
    feed(Put(b"f", b"1"))  # revision 7: revision 4 goes whole
    assert sm.watch.oldest_revision == 5
    assert len(sm.watch) == 3
    with pytest.raises(Compacted, match="oldest revision still held is 5"):
        sm.watch.events_since(b"a", None, 4)


def test_history_is_bounded_by_bytes_too() -> None:
    """Big values: the byte bound, not the event count, decides what stays (whole revisions, exact)."""
    hub = WatchHub(revision=0, history_events=1000, history_bytes=1000)
    for rev in range(1, 11):
        prev = KeyValue(b"k", b"p" * 100, 1, rev - 1, rev - 1) if rev > 1 else None
        hub.publish([Event(PUT, KeyValue(b"k", b"v" * 300, 1, rev, rev), prev)], rev)
    # Each event holds 1 + 300 + 100 bytes (the first 301): two fit in 1000, three do not.
    assert len(hub) == 2 and hub.oldest_revision == 9
    assert [e.revision for e in hub.events_since(b"k", None, 9)] == [9, 10]
    with pytest.raises(Compacted):
        hub.events_since(b"k", None, 8)
    hub.compact(10)
    assert len(hub) == 1
    hub.reset(10)
    hub.publish([Event(PUT, KeyValue(b"k", b"v" * 300, 1, 11, 1))], 11)
    assert len(hub) == 1, "reset forgot the bytes with the events"


def test_a_revision_larger_than_the_history_leaves_it_empty() -> None:
    hub = WatchHub(revision=0, history_events=2)
    kvs = [KeyValue(k, b"", 0, 1, 0) for k in (b"a", b"b", b"c")]
    hub.publish([Event(DELETE, kv) for kv in kvs], 1)
    assert len(hub) == 0 and hub.oldest_revision == 2
    with pytest.raises(Compacted):
        hub.events_since(b"a", None, 1)


def test_listeners_get_each_committed_batch(sm: KVStateMachine, feed: Feeder) -> None:
    got: list[list[tuple[bytes, int]]] = []

    def listener(events: Sequence[Event]) -> None:
        got.append([(e.kv.key, e.revision) for e in events])

    remove = sm.watch.add_listener(listener)
    feed(Put(b"a", b"1"), Put(b"b", b"1"))
    feed(DeleteRange(b"missing"))  # no event, no call
    feed(DeleteRange(b"a", FROM_KEY))
    remove()
    feed(Put(b"c", b"1"))
    assert got == [[(b"a", 1), (b"b", 2)], [(b"a", 3), (b"b", 3)]]


def test_resuming_a_watch_misses_nothing(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"k", b"1"), Put(b"k", b"2"))
    seen = [e.revision for e in sm.watch.events_since(b"k", None, 2)]
    sm.watch.add_listener(lambda events: seen.extend(e.revision for e in events))
    feed(Put(b"k", b"3"))
    assert seen == [2, 3]


def test_a_restarted_state_machine_has_no_history(make_backend: Callable[[], Backend]) -> None:
    backend = make_backend()
    feed = Feeder(KVStateMachine(backend))
    feed(Put(b"a", b"1"), Put(b"a", b"2"))
    again = KVStateMachine(backend)
    assert again.watch.oldest_revision == 3
    with pytest.raises(Compacted):
        again.watch.events_since(b"a", None, 2)
    Feeder(again)(Put(b"a", b"3"))
    assert [e.revision for e in again.watch.events_since(b"a", None, 3)] == [3]


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(1, 3), min_size=0, max_size=6), min_size=1, max_size=12),
    limit=st.integers(1, 8),
)
def test_history_trimming_drops_the_shortest_prefix_of_whole_revisions(batches: list[list[int]], limit: int) -> None:
    # Reference model: drop one event, then the rest of its revision, until within bounds.
    hub = WatchHub(revision=0, history_events=limit)
    model: list[int] = []
    oldest = 1
    revision = 0
    for batch in batches:
        events = []
        for per_revision in batch:  # a batch of revisions, each with 1-3 events (a txn writes several keys)
            revision += 1
            events += [Event(DELETE, KeyValue(b"k%d" % i, b"", 0, revision, 0)) for i in range(per_revision)]
        hub.publish(events, revision)
        model += [e.revision for e in events]
        while len(model) > limit:
            dropped = model.pop(0)
            while model and model[0] == dropped:
                model.pop(0)
            oldest = dropped + 1
        if not model:
            oldest = revision + 1
        assert len(hub) == len(model) and hub.oldest_revision == oldest
