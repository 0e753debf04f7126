"""Client sessions for exactly-once writes (Raft dissertation §6.3), with expiry by log time.

Theory of operation
-------------------
A client retries a write when it does not hear back (leader crash, lost reply, timeout); without help the
retry would apply twice. §6.3's remedy: the client opens a *session* (registered through the log, so every
replica knows it) and numbers its requests; each replica remembers, per session, the last sequence number it
applied and that request's result, and answers a repeat with the saved result instead of applying it again.
A client with several requests in flight tells the lowest sequence number it has no reply for yet
(``first_incomplete``); the session keeps every result from there on, and forgets the older ones.

Time. Sessions must expire, or a crashed client's session would live forever, but replicas cannot read their
own clocks: they would disagree about which sessions are gone. So, as §6.3 prescribes, the leader stamps
session commands with its clock (``time_ms``) and the state machine's clock is the largest stamp applied so far
(monotonic even across a leader with a slow clock). A session whose last activity is more than ``ttl_ms`` older
than that clock is *expired*.

Batch independence. Replicas apply the same log in different batches, so nothing observable may depend on
where a batch ends. The rule that makes it so: an expired session is treated exactly like an absent one the
moment it expires (a request on it gets ``SESSION_EXPIRED``, a keep-alive cannot revive it), and
:meth:`SessionTable.purge` — called at the end of every batch — only removes sessions that are already expired.
Whenever two replicas have applied the same prefix of the log they hold the same sessions.

The table keeps every live session in memory (they are few and small) and mirrors each change into the
backend's write transaction, so sessions are persisted atomically with the data. Updates (one per request)
are mirrored once per session per batch, by :meth:`SessionTable.flush` before the batch commits: a client
with 64 requests in flight would otherwise re-encode its 64-result record 64 times per batch. Opens, closes
and expiries are mirrored at once (and cancel a pending update). Expiry uses a heap of
``(deadline, session_id)`` with one entry per session, revalidated lazily: a popped entry whose session was
refreshed since is pushed back with its new deadline, so refreshing a session costs no heap operation.
"""

from __future__ import annotations

import bisect
import heapq
import operator
from collections.abc import Iterable
from typing import Protocol

import msgspec

from raftkv.kv.commands import Result

seq_of = operator.itemgetter(0)
"""The sequence number of a ``(seq, result)`` pair: the sort key of ``SessionRecord.results``."""

MAX_PENDING_RESULTS = 4096
"""Results a session keeps for requests its client has not acknowledged yet (bounds a session's size)."""


class SessionRecord(msgspec.Struct, frozen=True, array_like=True):
    """One open session (dissertation §6.3).

    ``low_seq``: the client has replies for every request below it, so their results are forgotten and such a
    request is stale. ``results``: ``(seq, result)`` of every applied request with ``seq >= low_seq``, in seq
    order, so that a retry gets its first result back. Invariant: every seq in ``results`` is ``>= low_seq``.
    """

    session_id: int
    ttl_ms: int
    low_seq: int
    last_active_ms: int
    results: tuple[tuple[int, Result], ...] = ()
    owner: str = ""
    """The user that opened it (``""``: none, or before any user existed); while authentication is on, only
    that user may use, refresh or close it, so that nobody reads another's kept results."""

    def results_from(self, low: int) -> tuple[tuple[int, Result], ...]:
        """The results with ``seq >= low``: a suffix, found by bisection (``results`` is in seq order)."""
        results = self.results
        if not results or results[0][0] >= low:
            return results
        return results[bisect.bisect_left(results, low, key=seq_of) :]

    def result_of(self, seq: int) -> Result | None:
        results = self.results
        i = bisect.bisect_left(results, seq, key=seq_of)  # in seq order: see the invariant above
        if i < len(results) and results[i][0] == seq:
            return results[i][1]
        return None

    @property
    def deadline_ms(self) -> int:
        """The last clock value at which the session is still alive."""
        return self.last_active_ms + self.ttl_ms

    def expired_at(self, clock_ms: int) -> bool:
        return clock_ms > self.last_active_ms + self.ttl_ms


class SessionSink(Protocol):
    """Where session changes are mirrored (a backend write transaction)."""

    def put_session(self, record: SessionRecord) -> None: ...

    def delete_session(self, session_id: int) -> None: ...


class SessionTable:
    """The live sessions, in memory, with their expiry heap."""

    __slots__ = ("_dirty", "_expiry", "_sessions")

    def __init__(self, records: Iterable[SessionRecord] = ()) -> None:
        self._sessions: dict[int, SessionRecord] = {r.session_id: r for r in records}
        self._dirty: set[int] = set()
        """Sessions updated in memory but not yet mirrored to the sink (see :meth:`flush`)."""
        self._expiry: list[tuple[int, int]] = [(r.deadline_ms, r.session_id) for r in self._sessions.values()]
        heapq.heapify(self._expiry)

    def __len__(self) -> int:
        return len(self._sessions)

    def records(self) -> list[SessionRecord]:
        """Every session held, in id order."""
        return [self._sessions[sid] for sid in sorted(self._sessions)]

    def live(self, session_id: int, clock_ms: int, sink: SessionSink) -> SessionRecord | None:
        """The session if it is open and not expired at ``clock_ms``; an expired one is dropped on the spot."""
        record = self._sessions.get(session_id)
        if record is None:
            return None
        if record.expired_at(clock_ms):
            del self._sessions[session_id]
            self._dirty.discard(session_id)
            sink.delete_session(session_id)
            return None
        return record

    def open(self, record: SessionRecord, sink: SessionSink) -> None:
        self._sessions[record.session_id] = record
        heapq.heappush(self._expiry, (record.deadline_ms, record.session_id))
        sink.put_session(record)

    def update(self, record: SessionRecord) -> None:
        """Replace a live session's record (new result, or a refreshed activity time); mirrored by :meth:`flush`."""
        self._sessions[record.session_id] = record
        self._dirty.add(record.session_id)

    def flush(self, sink: SessionSink) -> None:
        """Mirror every updated session to ``sink``: call before the batch's transaction commits."""
        if self._dirty:
            sessions = self._sessions
            for sid in sorted(self._dirty):  # sorted: the same writes in the same order on every replica
                sink.put_session(sessions[sid])
            self._dirty.clear()

    def close(self, session_id: int, sink: SessionSink) -> bool:
        if self._sessions.pop(session_id, None) is None:
            return False
        self._dirty.discard(session_id)
        sink.delete_session(session_id)
        return True

    def purge(self, clock_ms: int, sink: SessionSink) -> int:
        """Remove every session expired at ``clock_ms``; returns how many were removed."""
        heap = self._expiry
        sessions = self._sessions
        removed = 0
        while heap and heap[0][0] < clock_ms:
            _, sid = heapq.heappop(heap)
            record = sessions.get(sid)
            if record is None:
                continue  # closed, or already dropped by live(); its heap entry goes with it
            if record.expired_at(clock_ms):
                del sessions[sid]
                self._dirty.discard(sid)
                sink.delete_session(sid)
                removed += 1
            else:
                heapq.heappush(heap, (record.deadline_ms, sid))
        return removed
