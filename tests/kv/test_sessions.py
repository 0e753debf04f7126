"""Exactly-once sessions (dissertation §6.3): dedup by sequence number, expiry by log time, determinism."""

from __future__ import annotations

from collections.abc import Callable

from raftkv.kv import (
    Backend,
    CloseSession,
    DeleteRange,
    DeleteResult,
    ErrorCode,
    ErrorResult,
    KeepAlive,
    KeyValue,
    KVStateMachine,
    OpenSession,
    Put,
    PutResult,
    Request,
    SessionRecord,
    SessionResult,
    Txn,
    TxnResult,
)
from raftkv.kv.commands import Command, Compare, Range
from raftkv.kv.sessions import MAX_PENDING_RESULTS
from tests.kv.kvtestlib import Feeder, entries, split


def _code(result: object) -> ErrorCode | None:
    return result.code if isinstance(result, ErrorResult) else None


def test_session_ids_are_log_indexes(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"x", b"1"), Put(b"y", b"1"))
    assert feed.one(OpenSession(1000)) == SessionResult(3)
    assert feed(OpenSession(1000), OpenSession(5)) == [SessionResult(4), SessionResult(5)]
    assert [s.session_id for s in sm.sessions()] == [3, 4, 5]


def test_a_retry_returns_the_first_result_and_applies_once(sm: KVStateMachine, feed: Feeder) -> None:
    sid = 1
    feed(OpenSession(10_000))
    first = feed.one(Request(sid, 1, 0, Put(b"k", b"v", prev_kv=True)))
    assert first == PutResult(1)
    # The reply was lost; the client retries, maybe through a new leader, maybe twice.
    assert feed.one(Request(sid, 1, 0, Put(b"k", b"v", prev_kv=True))) == first
    assert feed(Request(sid, 1, 0, Put(b"k", b"v", prev_kv=True)), Request(sid, 1, 0, Put(b"k", b"v"))) == [
        first,
        first,
    ]
    assert sm.get(b"k") == KeyValue(b"k", b"v", 1, 1, 1)  # one write: version 1
    assert sm.revision == 1
    # The next request applies.
    assert feed.one(Request(sid, 2, 0, Put(b"k", b"w", prev_kv=True))) == PutResult(2, KeyValue(b"k", b"v", 1, 1, 1))
    assert sm.get(b"k") == KeyValue(b"k", b"w", 1, 2, 2)


def test_a_retried_transaction_keeps_its_first_outcome(sm: KVStateMachine, feed: Feeder) -> None:
    feed(OpenSession(10_000))
    cas = Request(1, 1, 0, Txn([Compare(b"k", "create", "=", 0)], [Put(b"k", b"mine")], [Range(b"k")]))
    first = feed.one(cas)
    assert first == TxnResult(True, (PutResult(1),), 1)
    # Re-executing would now take the failure branch; the retry must report the success it already had.
    assert feed.one(cas) == first
    assert sm.revision == 1


def test_sequence_numbers_may_skip_but_not_go_back(sm: KVStateMachine, feed: Feeder) -> None:
    feed(OpenSession(10_000))
    assert feed.one(Request(1, 5, 0, Put(b"k", b"5"))) == PutResult(1)
    assert feed.one(Request(1, 9, 0, Put(b"k", b"9"))) == PutResult(2)
    stale = feed.one(Request(1, 5, 0, Put(b"k", b"5-again")))
    assert _code(stale) is ErrorCode.STALE_REQUEST
    assert sm.get(b"k") == KeyValue(b"k", b"9", 1, 2, 2)
    assert feed.one(Request(1, 9, 0, Put(b"k", b"9"))) == PutResult(2)  # the last one is still answered


def test_sessions_are_independent(sm: KVStateMachine, feed: Feeder) -> None:
    feed(OpenSession(10_000), OpenSession(10_000))
    assert feed.one(Request(1, 1, 0, Put(b"a", b"1"))) == PutResult(1)
    assert feed.one(Request(2, 1, 0, Put(b"b", b"1"))) == PutResult(2)  # same seq, other session: applies
    assert sm.revision == 2


def test_requests_on_unknown_or_closed_sessions_are_refused(sm: KVStateMachine, feed: Feeder) -> None:
    assert _code(feed.one(Request(42, 1, 0, Put(b"k", b"v")))) is ErrorCode.SESSION_EXPIRED
    feed(OpenSession(10_000))  # index 2
    assert feed.one(CloseSession(2)) == SessionResult(2)
    assert feed.one(CloseSession(2)) == SessionResult(2)  # idempotent
    assert _code(feed.one(Request(2, 1, 0, Put(b"k", b"v")))) is ErrorCode.SESSION_EXPIRED
    assert _code(feed.one(KeepAlive(2))) is ErrorCode.SESSION_EXPIRED
    assert sm.get(b"k") is None and sm.sessions() == []


def test_expiry_follows_the_time_carried_by_commands(sm: KVStateMachine, feed: Feeder) -> None:
    feed(OpenSession(ttl_ms=100, time_ms=1000))  # session 1, active at 1000
    assert feed.one(Request(1, 1, 1100, Put(b"k", b"1"))) == PutResult(1)  # exactly ttl later: still alive
    assert sm.sessions()[0].last_active_ms == 1100
    assert feed.one(Request(1, 2, 1200, Put(b"k", b"2"))) == PutResult(2)
    expired = feed.one(Request(1, 3, 1301, Put(b"k", b"3")))
    assert _code(expired) is ErrorCode.SESSION_EXPIRED
    assert sm.get(b"k") == KeyValue(b"k", b"2", 1, 2, 2)  # not applied
    assert sm.sessions() == []
    assert sm.clock_ms == 1301


def test_the_clock_never_goes_backwards(sm: KVStateMachine, feed: Feeder) -> None:
    feed(OpenSession(ttl_ms=100, time_ms=1000), OpenSession(ttl_ms=1000, time_ms=1000))
    feed(KeepAlive(2, time_ms=1500))  # moves the clock to 1500: session 1 is now expired
    # A new leader whose clock lags stamps an older time: the session stays expired.
    assert _code(feed.one(Request(1, 1, 1050, Put(b"k", b"v")))) is ErrorCode.SESSION_EXPIRED
    assert sm.clock_ms == 1500


def test_keep_alive_refreshes_and_cannot_revive(sm: KVStateMachine, feed: Feeder) -> None:
    feed(OpenSession(ttl_ms=100, time_ms=0))
    for t in (90, 180, 270):
        assert feed.one(KeepAlive(1, time_ms=t)) == SessionResult(1)
    assert feed.one(Request(1, 1, 360, Put(b"k", b"v"))) == PutResult(1)
    # An expired session stays expired even if its expiry and the keep-alive land in the same batch.
    assert feed(KeepAlive(1, time_ms=461), Request(1, 2, 461, Put(b"k", b"w"))) == [
        ErrorResult(ErrorCode.SESSION_EXPIRED, "session 1 is not open: it expired, was closed or never existed"),
        ErrorResult(ErrorCode.SESSION_EXPIRED, "session 1 is not open: it expired, was closed or never existed"),
    ]


def test_a_retry_refreshes_the_session(sm: KVStateMachine, feed: Feeder) -> None:
    feed(OpenSession(ttl_ms=100, time_ms=0))
    first = feed.one(Request(1, 1, 50, Put(b"k", b"v")))
    assert feed.one(Request(1, 1, 140, Put(b"k", b"v"))) == first
    assert feed.one(Request(1, 2, 230, DeleteRange(b"k"))) == DeleteResult(2, 1)  # alive: 230 - 140 <= 100
    assert sm.get(b"k") is None


def test_expired_sessions_are_purged_at_the_end_of_each_batch(sm: KVStateMachine, feed: Feeder) -> None:
    feed(OpenSession(ttl_ms=100, time_ms=0), OpenSession(ttl_ms=500, time_ms=0))
    feed(Put(b"unrelated", b"x"))  # no time: nothing expires
    assert [s.session_id for s in sm.sessions()] == [1, 2]
    feed(KeepAlive(2, time_ms=101))  # the clock passes session 1's deadline
    assert [s.session_id for s in sm.sessions()] == [2]
    feed(OpenSession(ttl_ms=5, time_ms=700))  # session 5; the clock passes session 2's deadline (601)
    assert [s.session_id for s in sm.sessions()] == [5]


def test_session_table_is_persisted_with_the_data(make_backend: Callable[[], Backend]) -> None:
    backend = make_backend()
    sm = KVStateMachine(backend)
    feed = Feeder(sm)
    feed(OpenSession(ttl_ms=100, time_ms=7), Request(1, 1, 9, Put(b"k", b"v")))
    with backend.read() as view:
        assert view.sessions() == [SessionRecord(1, 100, 1, 9, ((1, PutResult(1)),))]
        assert view.meta().clock_ms == 9
    again = KVStateMachine(backend)  # a new state machine over the same backend resumes the table
    assert again.sessions() == sm.sessions()
    assert Feeder(again).one(Request(1, 1, 9, Put(b"k", b"v"))) == PutResult(1)
    assert again.revision == 1


SCRIPT: list[Command | bytes] = [
    OpenSession(ttl_ms=100, time_ms=0),  # 1
    OpenSession(ttl_ms=300, time_ms=10),  # 2
    Request(1, 1, 20, Put(b"a", b"1")),
    Request(2, 1, 30, Put(b"b", b"1")),
    Request(1, 1, 40, Put(b"a", b"1")),  # retry
    KeepAlive(2, time_ms=150),  # session 1 expires here (last active 40, ttl 100)
    Request(1, 2, 150, Put(b"a", b"2")),  # refused
    b"\xc1garbage",
    OpenSession(ttl_ms=50, time_ms=140),  # 9: the clock is already 150
    Request(9, 1, 160, Txn([Compare(b"a", "version", "=", 1)], [Put(b"c", b"1")], [])),
    Request(2, 3, 120, DeleteRange(b"a")),  # an older stamp; session 2 alive (last 150)
    Request(2, 2, 400, Put(b"b", b"2")),  # stale
    CloseSession(9, time_ms=400),
    Request(2, 4, 451, Put(b"b", b"3")),  # session 2 last active 400: alive
    KeepAlive(9, time_ms=452),
    Request(2, 5, 752, Put(b"b", b"4")),  # expired (451 + 300 < 752)
]


def test_the_same_log_gives_the_same_sessions_and_results_whatever_the_batching(
    make_backend: Callable[[], Backend],
) -> None:
    log = entries(1, SCRIPT)
    reference: tuple[object, ...] | None = None
    for cuts in ([], list(range(1, len(log))), [6], [5, 7], [3, 9, 12, 15], [1, 2, 8, 14]):
        sm = KVStateMachine(make_backend())
        results = [r for batch in split(log, cuts) for r in sm.apply(batch)]
        outcome = (results, sm.snapshot(), sm.sessions(), sm.clock_ms, sm.revision)
        if reference is None:
            reference = outcome
            codes = [_code(r) for r in results]
            assert codes[6] is ErrorCode.SESSION_EXPIRED
            assert codes[7] is ErrorCode.INVALID_COMMAND
            assert codes[11] is ErrorCode.STALE_REQUEST
            assert codes[14] is ErrorCode.SESSION_EXPIRED
            assert codes[15] is ErrorCode.SESSION_EXPIRED
            assert results[4] == results[2]
        assert outcome == reference, f"batching {cuts} diverged"


# --- several requests in flight (first_incomplete, dissertation §6.3) -----------------------------------------


def test_requests_in_flight_may_apply_out_of_order_and_each_is_answered_once(sm: KVStateMachine, feed: Feeder) -> None:
    (sid,) = [r.session_id for r in feed(OpenSession(ttl_ms=1000, time_ms=0)) if isinstance(r, SessionResult)]
    # The client sent 1, 2 and 3 together; 2's first attempt reached the log first, 1's was lost and retried.
    r2 = feed.one(Request(sid, 2, 1, Put(b"b", b"2"), first_incomplete=1))
    r3 = feed.one(Request(sid, 3, 2, Put(b"c", b"3"), first_incomplete=1))
    r1 = feed.one(Request(sid, 1, 3, Put(b"a", b"1"), first_incomplete=1))
    assert isinstance(r1, PutResult) and isinstance(r2, PutResult) and isinstance(r3, PutResult)
    assert sm.revision == 3, "request 1 is new, not stale: it must be applied"
    # Retries of any of them get the first result back and change nothing.
    assert feed(
        Request(sid, 1, 4, Put(b"a", b"1"), first_incomplete=1),
        Request(sid, 3, 4, Put(b"c", b"3"), first_incomplete=1),
    ) == [r1, r3]
    assert sm.revision == 3


def test_acknowledged_results_are_forgotten(sm: KVStateMachine, feed: Feeder) -> None:
    (sid,) = [r.session_id for r in feed(OpenSession(ttl_ms=1000, time_ms=0)) if isinstance(r, SessionResult)]
    feed(
        Request(sid, 1, 1, Put(b"a", b"1"), first_incomplete=1), Request(sid, 2, 1, Put(b"b", b"1"), first_incomplete=1)
    )
    (record,) = sm.sessions()
    assert [s for s, _ in record.results] == [1, 2]
    feed.one(Request(sid, 3, 2, Put(b"c", b"1"), first_incomplete=3))  # the client has replies for 1 and 2
    (record,) = sm.sessions()
    assert record.low_seq == 3 and [s for s, _ in record.results] == [3]
    stale = feed.one(Request(sid, 1, 3, Put(b"a", b"1"), first_incomplete=1))
    assert isinstance(stale, ErrorResult) and stale.code == ErrorCode.STALE_REQUEST
    assert sm.revision == 3


def test_a_session_holds_a_bounded_number_of_unacknowledged_results(sm: KVStateMachine, feed: Feeder) -> None:
    (sid,) = [r.session_id for r in feed(OpenSession(ttl_ms=10**9, time_ms=0)) if isinstance(r, SessionResult)]
    feed(*(Request(sid, s, 1, Put(b"k", b"v"), first_incomplete=1) for s in range(1, MAX_PENDING_RESULTS + 1)))
    assert sm.revision == MAX_PENDING_RESULTS
    refused = feed.one(Request(sid, MAX_PENDING_RESULTS + 1, 1, Put(b"k", b"v"), first_incomplete=1))
    assert isinstance(refused, ErrorResult) and refused.code == ErrorCode.TOO_MANY_PENDING
    assert sm.revision == MAX_PENDING_RESULTS, "a refused request is not applied"
    ok = feed.one(Request(sid, MAX_PENDING_RESULTS + 1, 1, Put(b"k", b"v"), first_incomplete=100))
    assert isinstance(ok, PutResult)
