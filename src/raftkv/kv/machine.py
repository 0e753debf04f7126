"""The replicated key-value state machine: applies committed log entries to a backend.

Theory of operation
-------------------
``apply(entries)`` is called with committed entries in log order (the Ready contract's step 3). Each call is one
backend write transaction: the data, the revision, the sessions, the clock and ``applied_index`` (the last
entry's index) are committed together, or — if the backend fails (disk full) — not at all, in which case the
in-memory state is reloaded from the backend and the exception propagates so the runtime can stop the node.
Because ``applied_index`` is committed with the data, a restarted node resumes right after the last batch that
reached the backend: the runtime hands it to the core as ``RaftConfig.applied`` and nothing is applied twice.
Entries at or below ``applied_index`` are skipped (their result is ``None``) as a second line of defence.

Determinism. Every replica must compute the same state and the same results from the same log, whatever its
backend and however the log is cut into batches. Hence: nothing here reads a clock or draws randomness (the
clock is the largest ``time_ms`` of the commands applied so far; session ids are log indexes); an invalid or
garbled entry is applied as an ``ErrorResult``, never an exception; sessions follow the batch-independence rule
explained in ``sessions.py``; results are immutable values (tuples, frozen structs).

Revisions (etcd v3 MVCC bookkeeping, without the old versions). The store revision counts write transactions
that changed something: a Put, a DeleteRange that deleted at least one key, or a Txn whose executed branch did
either. Each such transaction gets exactly one new revision, shared by all of its writes (etcd's "main
revision"); a Range, a delete of nothing, or a Txn of reads leaves it unchanged. Per key, ``create_revision``
is the revision of the write that created it, ``mod_revision`` of the latest write, ``version`` the number of
writes since creation. Deleting a key forgets it; re-creating starts again at version 1.

Reads. :meth:`KVStateMachine.read` serves a ``Range`` from the last committed state, outside the log (the
runtime decides when that is linearizable: ReadIndex, §6.4). A ``Range`` that does arrive through the log is
applied like any command and answered at that point of the log.

Watch. Each write produces :class:`~raftkv.kv.watch.Event` values; a batch's events are handed to
:attr:`KVStateMachine.watch` after the backend commit, so a watcher never sees an event that was rolled back.
"""

from __future__ import annotations

import bisect
import io
import struct
from collections.abc import Iterator, Sequence
from typing import Final, Protocol

import msgspec

from raftkv.kv.backend import Backend, Meta, ReadView, WriteTxn
from raftkv.kv.commands import (
    CloseSession,
    Command,
    Compare,
    DeleteRange,
    DeleteResult,
    ErrorResult,
    KeepAlive,
    KeyValue,
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
)
from raftkv.kv.errors import CommandError, ErrorCode, SnapshotError
from raftkv.kv.keys import is_single_key, scan_bounds
from raftkv.kv.sessions import MAX_PENDING_RESULTS, SessionRecord, SessionTable, seq_of
from raftkv.kv.watch import DEFAULT_HISTORY_EVENTS, Event, EventType, WatchHub
from raftkv.raft.errors import invariant
from raftkv.raft.types import Entry, EntryType


class Readable(Protocol):
    """A binary file object (anything with ``read(n) -> bytes``)."""

    def read(self, n: int = -1, /) -> bytes: ...


SNAPSHOT_FORMAT: Final = 3  # 2: sessions keep a window of results; 3: streamed in frames
SNAPSHOT_BATCH_KEYS: Final = 1024
"""Keys per frame: a fixed count (never a byte budget that could depend on timing), so equal states give equal
bytes, and one frame stays small (at most 1024 keys and values)."""


class SnapshotHeader(msgspec.Struct, frozen=True, array_like=True, tag="kvsnap"):
    """The first frame of a key-value snapshot."""

    format: int
    meta: Meta


class SnapshotKVs(msgspec.Struct, frozen=True, array_like=True, tag="kvs"):
    kvs: list[KeyValue]


class SnapshotSessions(msgspec.Struct, frozen=True, array_like=True, tag="sessions"):
    sessions: list[SessionRecord]


class SnapshotEnd(msgspec.Struct, frozen=True, array_like=True, tag="end"):
    """The last frame: counts, so a truncated stream is refused rather than installed short."""

    kv_count: int
    session_count: int


SnapshotFrame = SnapshotHeader | SnapshotKVs | SnapshotSessions | SnapshotEnd

_FRAME_LEN: Final = struct.Struct("<I")
_MAX_FRAME_BYTES: Final = 1 << 30
_SNAPSHOT_ENCODER: Final = msgspec.msgpack.Encoder()
_FRAME_DECODER: Final = msgspec.msgpack.Decoder(SnapshotFrame)


def _frame(item: SnapshotFrame) -> bytes:
    body = _SNAPSHOT_ENCODER.encode(item)
    return _FRAME_LEN.pack(len(body)) + body


def _snapshot_frames(view: ReadView) -> Iterator[bytes]:
    """The whole state in ``view`` as length-prefixed frames: a header, keys in key order (a fixed number per
    frame), sessions in id order, and an end frame with the counts. Memory use is one frame, not the state."""
    yield _frame(SnapshotHeader(SNAPSHOT_FORMAT, view.meta()))
    start, kv_count = b"", 0
    while True:
        kvs = view.scan(start, None, limit=SNAPSHOT_BATCH_KEYS)
        if not kvs:
            break
        kv_count += len(kvs)
        yield _frame(SnapshotKVs(kvs))
        if len(kvs) < SNAPSHOT_BATCH_KEYS:
            break
        start = kvs[-1].key + b"\0"  # the smallest key after the last one
    sessions = view.sessions()
    if sessions:
        yield _frame(SnapshotSessions(sessions))
    yield _frame(SnapshotEnd(kv_count, len(sessions)))


def _read_frames(reader: Readable) -> Iterator[SnapshotFrame]:
    """Decode frames until the end frame; a short, garbled or unterminated stream raises SnapshotError."""
    while True:
        prefix = reader.read(_FRAME_LEN.size)
        if len(prefix) < _FRAME_LEN.size:
            raise SnapshotError("the key-value snapshot is truncated (no end frame)")
        (size,) = _FRAME_LEN.unpack(prefix)
        if size > _MAX_FRAME_BYTES:
            raise SnapshotError(f"not a key-value snapshot: a frame claims {size} bytes")
        body = reader.read(size)
        if len(body) < size:
            raise SnapshotError("the key-value snapshot is truncated mid-frame")
        try:
            frame = _FRAME_DECODER.decode(body)
        except msgspec.DecodeError as exc:
            raise SnapshotError(f"not a key-value snapshot: {exc}") from None
        yield frame
        if isinstance(frame, SnapshotEnd):
            return


class SnapshotImage:
    """An open, consistent view of the state to stream as a snapshot (see :meth:`KVStateMachine.open_snapshot`).

    ``index`` is the log index the image reflects. :meth:`chunks` may be consumed in another thread than the
    one that opened the image only if the backend allows it; the runtime opens, streams and closes it in one
    worker thread. Close it (or use it as a context manager) to end the read transaction.
    """

    __slots__ = ("_ctx", "_view", "index")

    def __init__(self, backend: Backend) -> None:
        self._ctx = backend.read()
        self._view = self._ctx.__enter__()
        self.index = self._view.meta().applied_index

    def chunks(self) -> Iterator[bytes]:
        return _snapshot_frames(self._view)

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)

    def __enter__(self) -> SnapshotImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KVStateMachine:
    """The key-value store on top of a :class:`~raftkv.kv.backend.Backend` (see the module docstring).

    Implements ``raftkv.runtime.statemachine.StateMachine``. Not thread-safe: one caller at a time.
    """

    __slots__ = ("_applied", "_clock", "_events", "_revision", "_sessions", "_txn", "backend", "watch")

    def __init__(self, backend: Backend, *, watch_history_events: int = DEFAULT_HISTORY_EVENTS) -> None:
        self.backend = backend
        self._txn: WriteTxn | None = None
        """The write transaction of the batch being applied (``None`` between batches)."""
        self._events: list[Event] = []
        """The events of the batch being applied, published after its commit."""
        self._applied = 0
        self._revision = 0
        self._clock = 0
        self._sessions = SessionTable()
        self._load_state()
        self.watch = WatchHub(self._revision, watch_history_events)

    def _load_state(self) -> None:
        with self.backend.read() as view:
            meta = view.meta()
            self._sessions = SessionTable(view.sessions())
        self._applied = meta.applied_index
        self._revision = meta.revision
        self._clock = meta.clock_ms

    # --- observation ------------------------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        """The last log index applied and committed to the backend."""
        return self._applied

    @property
    def revision(self) -> int:
        """The store revision: the number of write transactions that changed something."""
        return self._revision

    @property
    def clock_ms(self) -> int:
        """The state machine's clock: the largest ``time_ms`` applied so far."""
        return self._clock

    def sessions(self) -> list[SessionRecord]:
        """The open sessions (including expired ones not yet purged), in id order."""
        return self._sessions.records()

    # --- the StateMachine protocol ------------------------------------------------------------------------

    def apply(self, entries: Sequence[Entry]) -> list[Result | None]:
        """Apply committed entries in order, in one backend transaction; one result per entry.

        The result is ``None`` for an entry without a command (a leader's no-op) or already applied.
        """
        if not entries:
            return []
        txn = self._txn = self.backend.begin()
        results: list[Result | None] = []
        try:
            for entry in entries:
                if entry.index <= self._applied:
                    results.append(None)
                    continue
                self._applied = entry.index
                if entry.type is not EntryType.NORMAL or not entry.data:
                    results.append(None)
                    continue
                try:
                    command = decode_command(entry.data)
                except CommandError as exc:
                    results.append(ErrorResult(ErrorCode.INVALID_COMMAND, str(exc)))
                    continue
                results.append(self._execute(command, entry.index))
            self._sessions.purge(self._clock, txn)
            self._sessions.flush(txn)
            txn.set_meta(Meta(self._applied, self._revision, self._clock))
            txn.commit()
        except BaseException:
            self._events = []
            try:
                txn.abort()
            finally:
                self._txn = None
                self._load_state()
            raise
        self._txn = None
        events, self._events = self._events, []
        self.watch.publish(events, self._revision)
        return results

    def read(self, request: Range) -> RangeResult:
        """Serve a Range from the last committed state (not through the log)."""
        with self.backend.read() as view:
            return self._range(view, request, view.meta().revision)

    def get(self, key: bytes) -> KeyValue | None:
        """The committed pair for ``key``, if any (a convenience over :meth:`read`)."""
        with self.backend.read() as view:
            return view.get(key)

    def snapshot(self) -> bytes:
        """The whole replicated state as bytes (equal states give equal bytes); see :meth:`open_snapshot`."""
        return self.snapshot_with_index()[1]

    def snapshot_with_index(self) -> tuple[int, bytes]:
        """The state as bytes, with the log index it reflects. Holds the whole image in memory: the runtime
        streams with :meth:`open_snapshot` instead."""
        with self.open_snapshot() as image:
            return image.index, b"".join(image.chunks())

    def open_snapshot(self) -> SnapshotImage:
        """A consistent image of the state, streamed frame by frame (Raft §7: snapshot without stopping).

        With the LMDB backend the image is one read transaction (MVCC): it may be opened and streamed in a
        worker thread while the event loop goes on applying, and it never reads the in-memory fields that
        ``apply`` changes. With the memory backend it must be consumed before the next ``apply``.
        """
        return SnapshotImage(self.backend)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's, atomically; see :meth:`restore_from`."""
        self.restore_from(io.BytesIO(data))

    def restore_from(self, reader: Readable) -> None:
        """Replace the whole state with the snapshot streamed from ``reader``, atomically (one write
        transaction: a truncated or garbled stream leaves the old state untouched); the watch history restarts
        empty. Memory use is one frame at a time, not the state."""
        self.load_snapshot(reader)  # on failure the backend is unchanged, and so is the in-memory state
        self.finish_restore()

    def load_snapshot(self, reader: Readable) -> None:
        """The backend half of :meth:`restore_from`: it touches only the backend, so with LMDB it may run in a
        worker thread while the loop serves reads (no ``apply`` may run meanwhile). Call
        :meth:`finish_restore` afterwards, on the owning thread."""
        frames = _read_frames(reader)
        try:
            header = next(frames)
        except StopIteration:  # pragma: no cover - _read_frames raises before running dry
            raise SnapshotError("the key-value snapshot is empty") from None
        if not isinstance(header, SnapshotHeader):
            raise SnapshotError("not a key-value snapshot: it does not start with a header frame")
        if header.format != SNAPSHOT_FORMAT:
            raise SnapshotError(f"snapshot format {header.format} is not supported (expected {SNAPSHOT_FORMAT})")
        txn = self.backend.begin()
        try:
            txn.clear()
            kv_count = session_count = 0
            for frame in frames:
                match frame:
                    case SnapshotKVs(kvs):
                        for kv in kvs:
                            txn.put(kv)
                        kv_count += len(kvs)
                    case SnapshotSessions(records):
                        for record in records:
                            txn.put_session(record)
                        session_count += len(records)
                    case SnapshotEnd():
                        if (frame.kv_count, frame.session_count) != (kv_count, session_count):
                            raise SnapshotError(
                                f"the key-value snapshot is inconsistent: it announces {frame.kv_count} keys and "
                                f"{frame.session_count} sessions but holds {kv_count} and {session_count}"
                            )
                    case SnapshotHeader():
                        raise SnapshotError("not a key-value snapshot: a second header frame")
            txn.set_meta(header.meta)
            txn.commit()
        except BaseException:
            txn.abort()
            raise

    def finish_restore(self) -> None:
        """Reload the in-memory state from the backend after :meth:`load_snapshot`; the watch history restarts."""
        self._load_state()
        self.watch.reset(self._revision)

    # --- commands -------------------------------------------------------------------------------------------

    def _execute(self, command: Command, index: int) -> Result:
        match command:
            case Request():
                return self._request(command)
            case Put() | DeleteRange() | Txn():
                return self._write(command)
            case Range():
                return self._range(self._wtxn(), command, self._revision)
            case OpenSession():
                return self._open_session(command, index)
            case KeepAlive():
                return self._keep_alive(command)
            case CloseSession():
                return self._close_session(command)

    def _wtxn(self) -> WriteTxn:
        txn = self._txn
        invariant(txn is not None, "a command executed outside apply()")
        assert txn is not None
        return txn

    def _advance_clock(self, time_ms: int) -> None:
        # The clock never goes backwards: a new leader whose clock lags its predecessor's cannot un-expire
        # sessions (dissertation §6.3 has the leader stamp commands with its time; replicas take the maximum).
        self._clock = max(self._clock, time_ms)

    def _write(self, op: Write) -> Result:
        match op:
            case Put():
                revision = self._revision + 1
                put = self._put(op, revision)
                self._revision = revision
                return put
            case DeleteRange():
                deleted = self._delete(op, self._revision + 1, self._revision)
                self._revision = deleted.revision
                return deleted
            case Txn():
                return self._transaction(op)

    def _put(self, op: Put, revision: int) -> PutResult:
        txn = self._wtxn()
        prev = txn.get(op.key)
        if prev is None:
            kv = KeyValue(op.key, op.value, revision, revision, 1)
        else:
            kv = KeyValue(op.key, op.value, prev.create_revision, revision, prev.version + 1)
        txn.put(kv)
        self._events.append(Event(EventType.PUT, kv, prev))
        return PutResult(revision, prev if op.prev_kv else None)

    def _delete(self, op: DeleteRange, revision: int, unchanged_revision: int) -> DeleteResult:
        """Delete at ``revision``; if nothing matched, report ``unchanged_revision`` (no new revision)."""
        txn = self._wtxn()
        if is_single_key(op.range_end):
            kv = txn.get(op.key)
            victims = [] if kv is None else [kv]
        else:
            start, end = scan_bounds(op.key, op.range_end)
            victims = txn.scan(start, end)
        if not victims:
            return DeleteResult(unchanged_revision, 0)
        events = self._events
        for kv in victims:
            txn.delete(kv.key)
            events.append(Event(EventType.DELETE, KeyValue(kv.key, b"", 0, revision, 0), kv))
        return DeleteResult(revision, len(victims), tuple(victims) if op.prev_kv else ())

    @staticmethod
    def _range(view: ReadView, op: Range, revision: int) -> RangeResult:
        if is_single_key(op.range_end):
            kv = view.get(op.key)
            if kv is None:
                return RangeResult((), 0, False, revision)
            if op.count_only:
                return RangeResult((), 1, False, revision)
            if op.keys_only:
                kv = KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version)
            return RangeResult((kv,), 1, False, revision)
        start, end = scan_bounds(op.key, op.range_end)
        if op.count_only:
            return RangeResult((), view.count(start, end), False, revision)
        kvs = view.scan(start, end, op.limit, op.keys_only)
        # Counting the whole range costs a second walk; only a full page can have more beyond it.
        count = view.count(start, end) if op.limit and len(kvs) >= op.limit else len(kvs)
        return RangeResult(tuple(kvs), count, count > len(kvs), revision)

    @staticmethod
    def _compare(view: ReadView, c: Compare) -> bool:
        kv = view.get(c.key)
        target = c.target
        ours: bytes | int
        if target == "value":
            if kv is None:
                return False  # etcd: a value comparison against a missing key fails whatever the operator
            ours = kv.value
        elif kv is None:
            ours = 0  # etcd: a missing key has version 0 and create/mod revision 0
        elif target == "version":
            ours = kv.version
        elif target == "create":
            ours = kv.create_revision
        else:
            ours = kv.mod_revision
        theirs = c.value
        op = c.op
        # __post_init__ guarantees bytes against bytes and int against int.
        if op == "=":
            return ours == theirs
        if op == "!=":
            return ours != theirs
        if op == "<":
            return ours < theirs  # type: ignore[operator]
        return ours > theirs  # type: ignore[operator]

    def _transaction(self, op: Txn) -> TxnResult:
        txn = self._wtxn()
        # Guards are all evaluated against the state before the transaction (etcd).
        succeeded = all(self._compare(txn, c) for c in op.compare)
        revision = self._revision + 1
        changed = False
        responses: list[OpResult] = []
        for o in op.success if succeeded else op.failure:
            seen = revision if changed else self._revision
            match o:
                case Put():
                    responses.append(self._put(o, revision))
                    changed = True
                case DeleteRange():
                    deleted = self._delete(o, revision, seen)
                    responses.append(deleted)
                    changed = changed or deleted.deleted > 0
                case Range():
                    responses.append(self._range(txn, o, seen))
        if changed:
            self._revision = revision
        return TxnResult(succeeded, tuple(responses), self._revision)

    # --- sessions (dissertation §6.3) -----------------------------------------------------------------------

    def _request(self, req: Request) -> Result:
        self._advance_clock(req.time_ms)
        txn = self._wtxn()
        sessions = self._sessions
        record = sessions.live(req.session_id, self._clock, txn)
        if record is None:
            return _no_session(req.session_id)
        # The client's acknowledgements: it has replies for everything below first_incomplete (§6.3). Legacy
        # requests (0) acknowledge everything before themselves: one request in flight per session.
        low = max(record.low_seq, req.first_incomplete or req.seq)
        # Bisection, not a filter of the whole tuple: with N requests in flight this runs N times per batch on
        # every replica.
        pending = record.results_from(low)
        if req.seq < record.low_seq:
            result: Result = ErrorResult(
                ErrorCode.STALE_REQUEST,
                f"request {req.seq} of session {req.session_id} was already answered (the client acknowledged "
                f"every request below {record.low_seq}); its result is no longer kept",
            )
            fresh = False
        elif (kept := record.result_of(req.seq)) is not None:
            result, fresh = kept, False  # applied once already: answer, do not re-apply
        elif len(pending) >= MAX_PENDING_RESULTS:
            result = ErrorResult(
                ErrorCode.TOO_MANY_PENDING,
                f"session {req.session_id} holds {MAX_PENDING_RESULTS} unacknowledged results; the request was "
                "not applied (advance first_incomplete)",
            )
            fresh = False
        else:
            result, fresh = self._write(req.op), True
        if fresh:
            if not pending or pending[-1][0] < req.seq:
                pending = (*pending, (req.seq, result))  # the usual case: requests arrive in seq order
            else:
                merged = list(pending)
                bisect.insort(merged, (req.seq, result), key=seq_of)
                pending = tuple(merged)
        # Any request, even a retry or a stale one, proves the client is alive.
        sessions.update(SessionRecord(record.session_id, record.ttl_ms, low, self._clock, pending))
        return result

    def _open_session(self, cmd: OpenSession, index: int) -> Result:
        self._advance_clock(cmd.time_ms)
        # The session id is the index of this entry: unique, and the same on every replica.
        self._sessions.open(SessionRecord(index, cmd.ttl_ms, 0, self._clock), self._wtxn())
        return SessionResult(index)

    def _keep_alive(self, cmd: KeepAlive) -> Result:
        self._advance_clock(cmd.time_ms)
        txn = self._wtxn()
        record = self._sessions.live(cmd.session_id, self._clock, txn)
        if record is None:
            return _no_session(cmd.session_id)
        self._sessions.update(
            SessionRecord(record.session_id, record.ttl_ms, record.low_seq, self._clock, record.results)
        )
        return SessionResult(cmd.session_id)

    def _close_session(self, cmd: CloseSession) -> Result:
        self._advance_clock(cmd.time_ms)
        self._sessions.close(cmd.session_id, self._wtxn())
        return SessionResult(cmd.session_id)


def _no_session(session_id: int) -> ErrorResult:
    # One answer for expired, closed and unknown sessions: a replica that already purged an expired session must
    # answer exactly like one that has not purged it yet (see sessions.py, "batch independence").
    return ErrorResult(
        ErrorCode.SESSION_EXPIRED, f"session {session_id} is not open: it expired, was closed or never existed"
    )
