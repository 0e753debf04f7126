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

Revisions (etcd v3 MVCC). The store revision counts write transactions that changed something: a Put, a
DeleteRange that deleted at least one key, or a Txn whose executed branch did either. Each such transaction
gets exactly one new revision, shared by all of its writes (etcd's "main revision"; each write in it gets the
next "sub" revision); a Range, a delete of nothing, or a Txn of reads leaves it unchanged. Per key,
``create_revision`` is the revision of the write that created it, ``mod_revision`` of the latest write,
``version`` the number of writes since creation; re-creating a deleted key starts again at version 1. An
empty store is at revision 0 and the first write makes revision 1 (etcd starts at 1 and writes 2: a gateway
adds one; docs/kv.md).

History. Every write is kept in the backend's history (``backend.py``) until a ``Compact`` command at a
later revision removes what only older reads could see: a ``Range`` may name any revision from the compaction
revision to the current one, and a watch may start anywhere in that span (:meth:`KVStateMachine.history_events`
reads it from the backend, so it survives restarts). Compaction is logical at once — ``compact_revision`` moves,
in the same transaction, on every replica alike — and physical in bounded steps (``compact_budget`` records at the
end of each applied batch), so a compaction of a million revisions never stops the node for seconds.

Range (etcd's ``Range``, in its order). The range is read at its revision (current or past). ``count_only``
answers the number of keys in it. Otherwise: the keys (all of them if the request sorts or filters by
create/mod revision, else the first ``limit``), then the min/max filters, then the sort, then ``limit``;
``count`` is the number of keys in the range at that revision (before the filters, as etcd), ``more`` whether
``limit`` cut anything. Ties in a sort keep key order (etcd leaves them unspecified), so that every replica
answers alike. ``keys_only`` drops the values after the sort.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Final, Protocol

import crc32c
import msgspec

from raftkv.kv.auth import AuthStore, decode_state, encode_state
from raftkv.kv.backend import Backend, HistoryRecord, LeaseRecord, Meta, ReadView, WriteTxn
from raftkv.kv.commands import (
    AuthChange,
    AuthDisable,
    Authed,
    AuthEnable,
    AuthResult,
    CloseSession,
    Command,
    Compact,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    ErrorResult,
    Internal,
    KeepAlive,
    KeyValue,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    OpenSession,
    OpResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Result,
    RoleAdd,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
    SessionResult,
    Txn,
    TxnResult,
    UserAdd,
    UserChangePassword,
    UserDelete,
    UserGrantRole,
    UserRevokeRole,
    Write,
    decode_command,
)
from raftkv.kv.errors import CommandError, Compacted, ErrorCode, FutureRevision, SnapshotError
from raftkv.kv.keys import is_single_key, key_in_range, scan_bounds
from raftkv.kv.sessions import MAX_PENDING_RESULTS, SessionRecord, SessionTable, seq_of
from raftkv.kv.watch import DEFAULT_HISTORY_EVENTS, Event, EventType, WatchHub
from raftkv.raft.errors import invariant
from raftkv.raft.types import Entry, EntryType


class Readable(Protocol):
    """A binary file object (anything with ``read(n) -> bytes``)."""

    def read(self, n: int = -1, /) -> bytes: ...


SNAPSHOT_FORMAT: Final = 4  # 2: sessions keep a window of results; 3: streamed in frames; 4: the history
SNAPSHOT_FORMATS_READ: Final = (3, 4)
"""Format 3 images (no history) restore with the history starting at their revision (compacted there)."""
SNAPSHOT_BATCH_KEYS: Final = 1024
"""Retained records per frame: a fixed count (never a byte budget that could depend on timing, nor what a
node's lagging physical compaction still holds), so equal states give equal bytes, and a frame stays small."""
COMPACT_STEP: Final = 256
"""History records examined at least per applied batch while a compaction is under way..."""
COMPACT_PER_ENTRY: Final = 2
"""... or this many per entry of the batch, if more: each write leaves about one record of garbage, so physical
compaction outpaces the writes twofold, while a batch's extra work stays bounded (bench/mvcc.py measures the
dip)."""


def compact_budget(entries: int) -> int:
    """How many history records a batch of ``entries`` entries examines for physical compaction."""
    return max(COMPACT_STEP, COMPACT_PER_ENTRY * entries)


class SnapshotHeader(msgspec.Struct, frozen=True, array_like=True, tag="kvsnap"):
    """The first frame of a key-value snapshot."""

    format: int
    meta: Meta


class SnapshotKVs(msgspec.Struct, frozen=True, array_like=True, tag="kvs"):
    """Format 3: current key-values only."""

    kvs: list[KeyValue]


class SnapshotHistory(msgspec.Struct, frozen=True, array_like=True, tag="history"):
    """Format 4: retained history records, in revision order."""

    records: list[HistoryRecord]


class _SnapshotHistoryOut(msgspec.Struct, frozen=True, array_like=True, tag="history"):
    """:class:`SnapshotHistory` as written: the records as the backend holds them encoded (no decode, no
    re-encode: the same bytes)."""

    records: list[msgspec.Raw]


class SnapshotSessions(msgspec.Struct, frozen=True, array_like=True, tag="sessions"):
    sessions: list[SessionRecord]


class SnapshotLeases(msgspec.Struct, frozen=True, array_like=True, tag="leases"):
    """Format 4: the leases (their keys are attached by the history's current values)."""

    leases: list[LeaseRecord]


class SnapshotAuth(msgspec.Struct, frozen=True, array_like=True, tag="auth"):
    """Format 4, optional: the auth store (``raftkv.kv.auth.AuthState``, encoded as the backend holds it)."""

    data: bytes


class SnapshotEnd(msgspec.Struct, frozen=True, array_like=True, tag="end"):
    """The last frame: counts, so a truncated stream is refused rather than installed short (``kv_count``
    counts history records in format 4)."""

    kv_count: int
    session_count: int
    lease_count: int = 0


SnapshotFrame = (
    SnapshotHeader | SnapshotKVs | SnapshotHistory | SnapshotSessions | SnapshotLeases | SnapshotAuth | SnapshotEnd
)

_FRAME_LEN: Final = struct.Struct("<I")
_MAX_FRAME_BYTES: Final = 1 << 30
_SNAPSHOT_ENCODER: Final = msgspec.msgpack.Encoder()
_FRAME_DECODER: Final = msgspec.msgpack.Decoder(SnapshotFrame)


def _frame(item: SnapshotFrame | _SnapshotHistoryOut) -> bytes:
    body = _SNAPSHOT_ENCODER.encode(item)
    return _FRAME_LEN.pack(len(body)) + body


_RECORD_DECODER: Final = msgspec.msgpack.Decoder(HistoryRecord)


def hash_history(view: ReadView, revision: int = 0) -> tuple[int, int]:
    """CRC-32C of the retained history up to ``revision`` (0: all of it) and the revision it reaches: equal on
    every node that applied the same log (etcd's HashKV, to compare members). The records are hashed as a
    snapshot image carries them (``history_image``: what compaction keeps, whatever physical removal has done
    yet on this node). A revision above the store's or below its compaction is refused, as a read is."""
    meta = view.meta()
    upto = revision or meta.revision
    if upto > meta.revision:
        raise FutureRevision(upto, meta.revision)
    if 0 < revision < meta.compact_revision:
        raise Compacted(revision, meta.compact_revision)
    crc = 0
    position: tuple[int, int] | None = (0, 0)
    while position is not None:
        raws, position = view.history_image(position, SNAPSHOT_BATCH_KEYS)
        for raw in raws:
            if _RECORD_DECODER.decode(raw).main > upto:  # the image is in revision order: the rest is later
                return crc, upto
            crc = crc32c.crc32c(raw, value=crc)
    return crc, upto


def _snapshot_frames(view: ReadView) -> Iterator[bytes]:
    """The whole state in ``view`` as length-prefixed frames: a header, the retained history in revision order
    (from a fixed number of records read per frame), sessions in id order, and an end frame with the counts.
    Memory use is one frame, not the state. Only what compaction keeps is written (physical removal may lag,
    differently on each node), so equal states give equal bytes."""
    yield _frame(SnapshotHeader(SNAPSHOT_FORMAT, view.meta()))
    position: tuple[int, int] | None = (0, 0)
    kv_count = 0
    pending: list[bytes] = []
    while position is not None or pending:
        if position is not None:
            raws, position = view.history_image(position, SNAPSHOT_BATCH_KEYS)
            pending.extend(raws)
        # Frames hold a fixed number of *retained* records (garbage left out differs from node to node).
        if len(pending) >= SNAPSHOT_BATCH_KEYS or (position is None and pending):
            frame, pending = pending[:SNAPSHOT_BATCH_KEYS], pending[SNAPSHOT_BATCH_KEYS:]
            kv_count += len(frame)
            yield _frame(_SnapshotHistoryOut([msgspec.Raw(r) for r in frame]))
    sessions = view.sessions()
    if sessions:
        yield _frame(SnapshotSessions(sessions))
    leases = view.leases()
    if leases:
        yield _frame(SnapshotLeases(leases))
    auth = view.auth()
    if auth:
        yield _frame(SnapshotAuth(auth))
    yield _frame(SnapshotEnd(kv_count, len(sessions), len(leases)))


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

    __slots__ = (
        "_applied",
        "_auth",
        "_auth_changed",
        "_clock",
        "_compact_pending",
        "_compact_revision",
        "_events",
        "_lease_ttls",
        "_revision",
        "_sessions",
        "_sub",
        "_sub_revision",
        "_txn",
        "_user",
        "backend",
        "on_auth_change",
        "watch",
    )

    def __init__(self, backend: Backend, *, watch_history_events: int = DEFAULT_HISTORY_EVENTS) -> None:
        self.backend = backend
        self._txn: WriteTxn | None = None
        """The write transaction of the batch being applied (``None`` between batches)."""
        self._events: list[Event] = []
        """The events of the batch being applied, published after its commit."""
        self._applied = 0
        self._revision = 0
        self._compact_revision = 0
        self._compact_pending = True
        """Garbage may be left to remove (checked, and cleared, by the first batch that finds none)."""
        self._sub = 0
        self._sub_revision = 0
        """The revision whose writes ``_sub`` numbers (each write of a revision gets the next sub)."""
        self._clock = 0
        self._sessions = SessionTable()
        self._lease_ttls: dict[int, int] = {}
        """Every lease's granted TTL, as stored (the leader's lessor follows it)."""
        self._auth = AuthStore()
        self._auth_changed = False
        self._user = ""
        """Whose command is being applied (the ``Authed`` user; ``""`` for the others)."""
        self.on_auth_change: Callable[[], None] | None = None
        """Called after a batch that changed the auth store is committed (open watches are checked again)."""
        self._load_state()
        self.watch = WatchHub(self._revision, watch_history_events)
        self.watch.compact(self._compact_revision)

    def _load_state(self) -> None:
        with self.backend.read() as view:
            meta = view.meta()
            self._sessions = SessionTable(view.sessions())
            self._lease_ttls = {lease.id: lease.ttl_s for lease in view.leases()}
            self._auth = AuthStore(decode_state(view.auth()))
        self._applied = meta.applied_index
        self._revision = meta.revision
        self._compact_revision = meta.compact_revision
        self._compact_pending = True
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
    def compact_revision(self) -> int:
        """Reads and watches below this revision are refused (0: nothing compacted)."""
        return self._compact_revision

    @property
    def lease_ttls(self) -> Mapping[int, int]:
        """Every lease (id -> granted TTL in seconds), as applied; read-only."""
        return MappingProxyType(self._lease_ttls)

    def lease_keys(self, lease_id: int) -> list[bytes]:
        """The live keys attached to ``lease_id``, in key order."""
        with self.backend.read() as view:
            return view.lease_keys(lease_id)

    @property
    def auth(self) -> AuthStore:
        """The auth store as applied (read it; only :meth:`apply` changes it)."""
        return self._auth

    @property
    def compaction_pending(self) -> bool:
        """Physical compaction may have garbage left to remove (the next applied batch takes a step)."""
        return self._compact_pending

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
                if self._auth.enabled and not isinstance(command, Authed | Internal):
                    # Whatever admitted it (a leader that had not applied the enable yet), a command on nobody's
                    # behalf is refused while authentication is on: every replica alike (auth.py).
                    results.append(ErrorResult(ErrorCode.USER_EMPTY, "user name is empty: authenticate first"))
                    continue
                results.append(self._execute(command, entry.index))
            self._sessions.purge(self._clock, txn)
            self._sessions.flush(txn)
            if self._compact_pending:
                # Physical compaction, a bounded step per batch; what it removes no read can see any more.
                budget = compact_budget(len(entries))
                self._compact_pending = not txn.compact(self._compact_revision, budget)
            txn.set_meta(Meta(self._applied, self._revision, self._clock, self._compact_revision))
            txn.commit()
        except BaseException:
            self._events = []
            self._auth_changed = False
            try:
                txn.abort()
            finally:
                self._txn = None
                self._load_state()
            raise
        self._txn = None
        events, self._events = self._events, []
        if self._auth_changed:
            # Before the events are offered: a watch this change revoked gets none written after it.
            self._auth_changed = False
            if self.on_auth_change is not None:
                self.on_auth_change()
        self.watch.publish(events, self._revision)
        if self.watch.compact_revision < self._compact_revision:
            self.watch.compact(self._compact_revision)
        return results

    def read(self, request: Range) -> RangeResult | ErrorResult:
        """Serve a Range from the last committed state (not through the log); a revision outside the history
        gives an ``ErrorResult`` (``COMPACTED`` / ``FUTURE_REVISION``), as through the log."""
        with self.backend.read() as view:
            meta = view.meta()
            return self._range(view, request, meta.revision, meta.compact_revision)

    def history_events(
        self, key: bytes, range_end: bytes | None, start_revision: int, max_records: int = 1024
    ) -> tuple[list[Event], int]:
        """Events for keys in ``(key, range_end)`` at revisions ``>= start_revision``, from the durable history,
        reading about ``max_records`` records (whole revisions); and the revision to continue from (above the
        store's revision once everything is read). Raises :class:`Compacted` below the compaction revision.

        Each event carries ``prev_kv`` when the version before it is still held (etcd: absent once compacted).
        """
        with self.backend.read() as view:
            meta = view.meta()
            if start_revision < meta.compact_revision:
                raise Compacted(start_revision, meta.compact_revision)
            start = max(start_revision, 1)
            records = view.history(start, 0, max_records)
            if len(records) == max_records and records[-1].main != records[0].main:
                last = records[-1].main  # maybe cut short: leave that revision to the next call
                records = [r for r in records if r.main < last]
                following = last
            elif len(records) == max_records:
                # One revision larger than a page: take the whole of it.
                main = records[0].main
                while True:
                    more = view.history(main, records[-1].sub + 1, max_records)
                    records.extend(r for r in more if r.main == main)
                    if len(more) < max_records or more[-1].main != main:
                        break  # the revision ended in this page
                following = main + 1
            else:
                following = meta.revision + 1
            events: list[Event] = []
            for r in records:
                if not key_in_range(r.kv.key, key, range_end):
                    continue
                before = view.previous(r)
                prev = None if before is None or before.tombstone else before.kv
                events.append(Event(EventType.DELETE if r.tombstone else EventType.PUT, r.kv, prev))
            return events, following

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
        if header.format not in SNAPSHOT_FORMATS_READ:
            raise SnapshotError(f"snapshot format {header.format} is not supported (expected {SNAPSHOT_FORMAT})")
        meta = header.meta
        if header.format == 3:
            # No history in the image: it starts at the image's revision, compacted there.
            meta = msgspec.structs.replace(meta, compact_revision=meta.revision)
        subs: dict[int, int] = {}
        txn = self.backend.begin()
        try:
            txn.clear()
            kv_count = session_count = lease_count = 0
            for frame in frames:
                match frame:
                    case SnapshotHistory(history):
                        if header.format != 4:
                            raise SnapshotError("not a key-value snapshot: a history frame in a format 3 image")
                        for item in history:
                            txn.restore(item)
                        kv_count += len(history)
                    case SnapshotKVs(kvs):
                        if header.format != 3:
                            raise SnapshotError("not a key-value snapshot: a format 3 frame in a format 4 image")
                        for kv in kvs:
                            # Keys written by one transaction share a main revision: each gets its own sub.
                            sub = subs.get(kv.mod_revision, 0)
                            subs[kv.mod_revision] = sub + 1
                            txn.restore(HistoryRecord(kv.mod_revision, sub, kv))
                        kv_count += len(kvs)
                    case SnapshotSessions(records):
                        for record in records:
                            txn.put_session(record)
                        session_count += len(records)
                    case SnapshotLeases(leases):
                        for lease in leases:
                            txn.put_lease(lease)
                        lease_count += len(leases)
                    case SnapshotAuth(data):
                        try:
                            decode_state(data)
                        except msgspec.DecodeError as exc:
                            raise SnapshotError(f"not a key-value snapshot: its auth store: {exc}") from None
                        txn.set_auth(data)
                    case SnapshotEnd():
                        counts = (frame.kv_count, frame.session_count, frame.lease_count)
                        if counts != (kv_count, session_count, lease_count):
                            raise SnapshotError(
                                f"the key-value snapshot is inconsistent: it announces {frame.kv_count} keys, "
                                f"{frame.session_count} sessions and {frame.lease_count} leases but holds "
                                f"{kv_count}, {session_count} and {lease_count}"
                            )
                    case SnapshotHeader():
                        raise SnapshotError("not a key-value snapshot: a second header frame")
            txn.set_meta(meta)
            txn.commit()
        except BaseException:
            txn.abort()
            raise

    def finish_restore(self) -> None:
        """Reload the in-memory state from the backend after :meth:`load_snapshot`; the watch history restarts."""
        self._load_state()
        self.watch.reset(self._revision)
        self.watch.compact(self._compact_revision)
        if self.on_auth_change is not None:
            self.on_auth_change()

    # --- commands -------------------------------------------------------------------------------------------

    def _execute(self, command: Command, index: int) -> Result:
        match command:
            case Request():
                return self._request(command, index)
            case Put() | DeleteRange() | Txn() | Compact() | LeaseGrant() | LeaseRevoke():
                return self._write(command, index)
            case Range():
                return self._range(self._wtxn(), command, self._revision, self._compact_revision)
            case OpenSession():
                return self._open_session(command, index)
            case KeepAlive():
                return self._keep_alive(command)
            case CloseSession():
                return self._close_session(command)
            case Authed():
                # Checked again here, against the auth store as of this point of the log (auth.py).
                if self._auth.enabled:
                    why = self._auth.check(command.user, command.command, self._wtxn().lease_keys)
                    if why is not None:
                        return why
                self._user = command.user
                try:
                    return self._execute(command.command, index)
                finally:
                    self._user = ""
            case Internal():
                # A node's own revoke or compaction (the decoder admits nothing else in it): whoever the users are.
                return self._write(command.command, index)
            case (
                AuthEnable()
                | AuthDisable()
                | UserAdd()
                | UserDelete()
                | UserChangePassword()
                | UserGrantRole()
                | UserRevokeRole()
                | RoleAdd()
                | RoleDelete()
                | RoleGrantPermission()
                | RoleRevokePermission()
            ):
                return self._auth_change(command)
            case _:
                # Node queries are answered by a node; one that reached the log is applied as a no-op.
                return ErrorResult(ErrorCode.INVALID_COMMAND, f"{type(command).__name__} is not a log command")

    def _auth_change(self, change: AuthChange) -> Result:
        result = self._auth.apply(change)
        if isinstance(result, AuthResult):
            self._wtxn().set_auth(encode_state(self._auth.state()))
            self._auth_changed = True
        return result

    def _wtxn(self) -> WriteTxn:
        txn = self._txn
        invariant(txn is not None, "a command executed outside apply()")
        assert txn is not None
        return txn

    def _advance_clock(self, time_ms: int) -> None:
        # The clock never goes backwards: a new leader whose clock lags its predecessor's cannot un-expire
        # sessions (dissertation §6.3 has the leader stamp commands with its time; replicas take the maximum).
        self._clock = max(self._clock, time_ms)

    def _next_sub(self, revision: int) -> int:
        if revision != self._sub_revision:
            self._sub_revision, self._sub = revision, 0
        sub = self._sub
        self._sub += 1
        return sub

    def _compact(self, op: Compact) -> Result:
        """etcd's rules: refused at or below the compaction revision, and above the current one."""
        if op.revision <= self._compact_revision:
            return ErrorResult(
                ErrorCode.COMPACTED,
                f"revision {op.revision} is compacted already: the history is compacted at {self._compact_revision}",
                self._compact_revision,
            )
        if op.revision > self._revision:
            return _future(op.revision, self._revision)
        self._compact_revision = op.revision
        self._compact_pending = True
        return CompactResult(op.revision, self._revision)

    def _write(self, op: Write, index: int) -> Result:
        match op:  # the common case first: this runs for every write on every replica
            case Put():
                if op.lease and self._wtxn().get_lease(op.lease) is None:
                    return _no_lease(op.lease)
                revision = self._revision + 1
                put = self._put(op, revision)
                self._revision = revision
                return put
            case Compact():
                return self._compact(op)
            case LeaseGrant():
                return self._grant(op, index)
            case LeaseRevoke():
                return self._revoke(op)
            case DeleteRange():
                deleted = self._delete(op, self._revision + 1, self._revision)
                self._revision = deleted.revision
                return deleted
            case Txn():
                return self._transaction(op)

    def _put(self, op: Put, revision: int) -> PutResult:
        txn = self._txn
        assert txn is not None  # inside apply()
        prev = txn.get(op.key)
        if prev is None:
            kv = KeyValue(op.key, op.value, revision, revision, 1, op.lease)
        else:
            kv = KeyValue(op.key, op.value, prev.create_revision, revision, prev.version + 1, op.lease)
        txn.put(kv, self._next_sub(revision))
        self._events.append(Event(EventType.PUT, kv, prev))
        return PutResult(revision, prev if op.prev_kv else None)

    def _grant(self, op: LeaseGrant, index: int) -> Result:
        txn = self._wtxn()
        lease_id = op.id or index  # the entry's index: unique, and the same on every replica
        if txn.get_lease(lease_id) is not None:
            return ErrorResult(ErrorCode.LEASE_EXISTS, f"lease {lease_id} already exists")
        txn.put_lease(LeaseRecord(lease_id, op.ttl_s))
        self._lease_ttls[lease_id] = op.ttl_s
        return LeaseGrantResult(lease_id, op.ttl_s, self._revision)

    def _revoke(self, op: LeaseRevoke) -> Result:
        """Delete the lease's keys at one new revision (as etcd's revoke), then the lease."""
        txn = self._wtxn()
        if txn.get_lease(op.id) is None:
            return _no_lease(op.id)
        keys = txn.lease_keys(op.id)
        revision = self._revision + 1 if keys else self._revision
        events = self._events
        for key in keys:
            kv = txn.get(key)
            assert kv is not None  # attached keys are live keys (the backend's invariant)
            txn.delete(key, revision, self._next_sub(revision))
            events.append(Event(EventType.DELETE, KeyValue(key, b"", 0, revision, 0), kv))
        txn.delete_lease(op.id)
        self._lease_ttls.pop(op.id, None)
        self._revision = revision
        return LeaseRevokeResult(revision, len(keys))

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
            txn.delete(kv.key, revision, self._next_sub(revision))
            events.append(Event(EventType.DELETE, KeyValue(kv.key, b"", 0, revision, 0), kv))
        return DeleteResult(revision, len(victims), tuple(victims) if op.prev_kv else ())

    @staticmethod
    def _range(view: ReadView, op: Range, revision: int, compact_revision: int) -> RangeResult | ErrorResult:
        """``op`` against ``view``, whose store revision is ``revision`` (see the module docstring for etcd's
        order of filters, sort and limit)."""
        refused = _check_revision(op, revision, compact_revision)
        if refused is not None:
            return refused
        at = op.revision if 0 < op.revision < revision else 0  # 0: the current state (no history walk)
        if is_single_key(op.range_end):
            kv = view.get(op.key) if not at else view.get_at(op.key, at)
            kvs = [] if kv is None else [kv]
            count = len(kvs)
            if op.count_only:
                return RangeResult((), count, False, revision)
        else:
            start, end = scan_bounds(op.key, op.range_end)
            if op.count_only:
                return RangeResult(
                    (), view.count(start, end) if not at else view.count_at(start, end, at), False, revision
                )
            limit = 0 if op.needs_all else op.limit
            keys_only = op.keys_only and op.sort_target != "value"
            kvs = view.scan(start, end, limit, keys_only) if not at else view.scan_at(start, end, at, limit, keys_only)
            if limit and len(kvs) >= limit:
                # Counting the whole range costs a second walk; only a full page can have more beyond it.
                count = view.count(start, end) if not at else view.count_at(start, end, at)
            else:
                count = len(kvs)
        if not op.needs_all:
            if op.keys_only and kvs and kvs[0].value:
                kvs = [_strip(kv) for kv in kvs]
            return RangeResult(tuple(kvs), count, count > len(kvs), revision)
        kvs = _filtered(kvs, op)
        order = op.sort_order if op.sort_order != "none" or op.sort_target == "key" else "ascend"
        if order != "none" and (op.sort_target != "key" or order == "descend"):
            kvs.sort(key=_SORT_KEYS[op.sort_target], reverse=order == "descend")
        more = bool(op.limit) and len(kvs) > op.limit
        if more:
            kvs = kvs[: op.limit]
        if op.keys_only:
            kvs = [_strip(kv) for kv in kvs]
        return RangeResult(tuple(kvs), count, more, revision)

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
        elif target == "lease":
            ours = kv.lease
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

    def _transaction(self, op: Txn) -> TxnResult | ErrorResult:
        txn = self._wtxn()
        # Guards are all evaluated against the state before the transaction (etcd).
        succeeded = all(self._compare(txn, c) for c in op.compare)
        for o in op.success if succeeded else op.failure:
            # A read at a revision outside the history fails the whole transaction before it changes anything
            # (etcd checks every range of the branch first).
            if isinstance(o, Range) and (refused := _check_revision(o, self._revision, self._compact_revision)):
                return refused
            if isinstance(o, Put) and o.lease and txn.get_lease(o.lease) is None:
                return _no_lease(o.lease)  # etcd: a put to a missing lease fails the whole transaction
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
                    read = self._range(txn, o, seen, self._compact_revision)
                    assert isinstance(read, RangeResult)  # checked above
                    responses.append(read)
        if changed:
            self._revision = revision
        return TxnResult(succeeded, tuple(responses), self._revision)

    # --- sessions (dissertation §6.3) -----------------------------------------------------------------------

    def _request(self, req: Request, index: int) -> Result:
        self._advance_clock(req.time_ms)
        txn = self._wtxn()
        sessions = self._sessions
        record = sessions.live(req.session_id, self._clock, txn)
        if record is None:
            return _no_session(req.session_id)
        if (mismatch := self._not_owner(record)) is not None:
            return mismatch
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
            result, fresh = self._write(req.op, index), True
        if fresh:
            if not pending or pending[-1][0] < req.seq:
                pending = (*pending, (req.seq, result))  # the usual case: requests arrive in seq order
            else:
                merged = list(pending)
                bisect.insort(merged, (req.seq, result), key=seq_of)
                pending = tuple(merged)
        # Any request, even a retry or a stale one, proves the client is alive.
        sessions.update(SessionRecord(record.session_id, record.ttl_ms, low, self._clock, pending, record.owner))
        return result

    def _open_session(self, cmd: OpenSession, index: int) -> Result:
        self._advance_clock(cmd.time_ms)
        # The session id is the index of this entry: unique, and the same on every replica.
        self._sessions.open(SessionRecord(index, cmd.ttl_ms, 0, self._clock, owner=self._user), self._wtxn())
        return SessionResult(index)

    def _keep_alive(self, cmd: KeepAlive) -> Result:
        self._advance_clock(cmd.time_ms)
        txn = self._wtxn()
        record = self._sessions.live(cmd.session_id, self._clock, txn)
        if record is None:
            return _no_session(cmd.session_id)
        if (mismatch := self._not_owner(record)) is not None:
            return mismatch
        self._sessions.update(
            SessionRecord(record.session_id, record.ttl_ms, record.low_seq, self._clock, record.results, record.owner)
        )
        return SessionResult(cmd.session_id)

    def _not_owner(self, record: SessionRecord) -> ErrorResult | None:
        """While authentication is on, a session serves only the user that opened it: anyone else would read
        its kept results, or spend its sequence numbers. Answered as an expired session, so that a client
        opens one of its own (one opened before authentication was on has no owner: the same)."""
        if self._auth.enabled and record.owner != self._user:
            return ErrorResult(
                ErrorCode.SESSION_EXPIRED,
                f"session {record.session_id} belongs to another user: open a session of your own",
            )
        return None

    def _close_session(self, cmd: CloseSession) -> Result:
        self._advance_clock(cmd.time_ms)
        record = self._sessions.live(cmd.session_id, self._clock, self._wtxn())
        if record is not None and (mismatch := self._not_owner(record)) is not None:
            return mismatch
        self._sessions.close(cmd.session_id, self._wtxn())
        return SessionResult(cmd.session_id)


def _strip(kv: KeyValue) -> KeyValue:
    return KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def _future(requested: int, revision: int) -> ErrorResult:
    return ErrorResult(
        ErrorCode.FUTURE_REVISION,
        f"revision {requested} is in the future: the store is at revision {revision}",
        revision,
    )


def _check_revision(op: Range, revision: int, compact_revision: int) -> ErrorResult | None:
    if op.revision > revision:
        return _future(op.revision, revision)
    if 0 < op.revision < compact_revision:
        return ErrorResult(
            ErrorCode.COMPACTED,
            f"revision {op.revision} is compacted; the oldest revision still held is {compact_revision}",
            compact_revision,
        )
    return None


def _filtered(kvs: list[KeyValue], op: Range) -> list[KeyValue]:
    lo_mod, hi_mod = op.min_mod_revision, op.max_mod_revision
    lo_create, hi_create = op.min_create_revision, op.max_create_revision
    return [
        kv
        for kv in kvs
        if (not lo_mod or kv.mod_revision >= lo_mod)
        and (not hi_mod or kv.mod_revision <= hi_mod)
        and (not lo_create or kv.create_revision >= lo_create)
        and (not hi_create or kv.create_revision <= hi_create)
    ]


_SORT_KEYS: Final[dict[str, Callable[[KeyValue], bytes | int]]] = {
    "key": lambda kv: kv.key,
    "version": lambda kv: kv.version,
    "create": lambda kv: kv.create_revision,
    "mod": lambda kv: kv.mod_revision,
    "value": lambda kv: kv.value,
}


def _no_lease(lease_id: int) -> ErrorResult:
    return ErrorResult(
        ErrorCode.LEASE_NOT_FOUND, f"lease {lease_id} not found: it was never granted, or was revoked or expired"
    )


def _no_session(session_id: int) -> ErrorResult:
    # One answer for expired, closed and unknown sessions: a replica that already purged an expired session must
    # answer exactly like one that has not purged it yet (see sessions.py, "batch independence").
    return ErrorResult(
        ErrorCode.SESSION_EXPIRED, f"session {session_id} is not open: it expired, was closed or never existed"
    )
