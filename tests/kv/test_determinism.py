"""Determinism: the same log gives the same results and state on every backend and under every batching;
and the optimized state machine agrees with a naive model for put / delete / range."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.kv import (
    FROM_KEY,
    CloseSession,
    Command,
    Compare,
    DeleteRange,
    DeleteResult,
    Event,
    KeepAlive,
    KeyValue,
    KVStateMachine,
    MemoryBackend,
    OpenSession,
    Put,
    PutResult,
    Range,
    RangeResult,
    Request,
    Result,
    Txn,
    prefix_end,
)
from raftkv.kv.commands import (
    AuthDisable,
    Authed,
    AuthEnable,
    Permission,
    RoleAdd,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
    UserAdd,
    UserDelete,
    UserGrantRole,
    UserRevokeRole,
)
from raftkv.storage.kv_lmdb import LMDBBackend
from tests.kv.kvtestlib import entries, split

KEYS = [b"a", b"ab", b"abc", b"b", b"b\xff", b"c", b"\xff"]
keys = st.sampled_from(KEYS)
values = st.sampled_from([b"", b"x", b"y", b"z" * 40])


@st.composite
def ranges(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """(key, range_end) in every form: single key, interval, from-key, prefix."""
    key = draw(keys)
    form = draw(st.sampled_from(["single", "interval", "from", "prefix"]))
    if form == "single":
        return key, None
    if form == "interval":
        return key, draw(keys)
    if form == "from":
        return key, FROM_KEY
    return key, prefix_end(key)


puts = st.builds(Put, keys, values, st.booleans())
deletes = ranges().flatmap(lambda r: st.builds(DeleteRange, st.just(r[0]), st.just(r[1]), st.booleans()))
reads = ranges().flatmap(
    lambda r: st.builds(Range, st.just(r[0]), st.just(r[1]), st.integers(0, 3), st.booleans(), st.booleans())
)
compares = st.one_of(
    st.builds(Compare, keys, st.just("value"), st.sampled_from(["=", "!=", "<", ">"]), values),
    st.builds(
        Compare,
        keys,
        st.sampled_from(["version", "create", "mod"]),
        st.sampled_from(["=", "!=", "<", ">"]),
        st.integers(0, 6),
    ),
)
ops = st.one_of(puts, deletes, reads)
txns = st.builds(Txn, st.lists(compares, max_size=2), st.lists(ops, max_size=4), st.lists(ops, max_size=3))
writes = st.one_of(puts, deletes, txns)
users = st.sampled_from(["root", "alice", "bob", ""])
permissions = ranges().flatmap(
    lambda r: st.builds(Permission, st.sampled_from(["read", "write", "readwrite"]), st.just(r[0]), st.just(r[1]))
)
auth_changes = st.one_of(
    st.builds(UserAdd, users.filter(bool), st.just(""), st.just("scrypt$h")),
    st.builds(UserGrantRole, users.filter(bool), st.sampled_from(["root", "r1", "r2"])),
    st.builds(UserRevokeRole, users.filter(bool), st.sampled_from(["root", "r1"])),
    st.builds(RoleAdd, st.sampled_from(["r1", "r2"])),
    st.builds(RoleDelete, st.sampled_from(["r1", "r2"])),
    st.builds(RoleGrantPermission, st.sampled_from(["r1", "r2"]), permissions),
    ranges().flatmap(lambda r: st.builds(RoleRevokePermission, st.just("r1"), st.just(r[0]), st.just(r[1]))),
    st.builds(UserDelete, users.filter(bool)),
    st.just(AuthEnable(b"secret")),
    st.just(AuthDisable()),
)


@st.composite
def logs(draw: st.DrawFn, max_size: int = 40) -> list[Command | bytes]:
    """Random logs whose session commands mostly name sessions opened earlier in the log, with a clock that
    mostly moves forward (a lagging leader's stamp now and then), retries and stale sequence numbers."""
    out: list[Command | bytes] = []
    opened: list[int] = []  # session ids (log indexes) opened so far
    last_seq: dict[int, int] = {}
    clock = 0
    for _ in range(draw(st.integers(1, max_size))):
        clock = max(0, clock + draw(st.integers(-30, 60)))
        index = len(out) + 1
        kind = draw(
            st.sampled_from(
                ["put", "del", "range", "txn", "open", "req", "req", "req", "keep", "close", "junk", "auth", "auth"]
            )
        )
        sid = draw(st.sampled_from(opened)) if opened and draw(st.integers(0, 9)) else draw(st.integers(1, 50))
        if kind == "open":
            out.append(OpenSession(draw(st.sampled_from([40, 150, 1000])), clock))
            opened.append(index)
        elif kind == "req":
            last = last_seq.get(sid, 0)
            seq = draw(st.sampled_from([last + 1, last + 1, last + 3, max(last, 1), max(last - 1, 1)]))
            last_seq[sid] = max(last, seq)
            first_incomplete = draw(st.sampled_from([0, 0, 1, max(1, seq - 2), seq]))
            out.append(Request(sid, seq, clock, draw(writes), first_incomplete))
        elif kind == "keep":
            out.append(KeepAlive(sid, clock))
        elif kind == "close":
            out.append(CloseSession(sid, clock))
        elif kind == "auth":
            out.append(draw(auth_changes))
        elif kind == "junk":
            out.append(draw(st.sampled_from([b"\xc1", b"\x91\xa3put", b"\x92\xa4open\x00"])))
        else:
            out.append(draw({"put": puts, "del": deletes, "range": reads, "txn": txns}[kind]))
        if kind not in ("junk",) and draw(st.integers(0, 2)) == 0:  # on someone's behalf (or nobody's: "")
            out[-1] = Authed(draw(users), out[-1])  # type: ignore[arg-type]
    return out


def _run(sm: KVStateMachine, log: Sequence[object], cuts: list[int]) -> tuple[list[Result | None], list[Event]]:
    events: list[Event] = []
    sm.watch.add_listener(events.extend)
    results: list[Result | None] = []
    for batch in split(log, cuts):  # type: ignore[arg-type]
        results.extend(sm.apply(batch))  # type: ignore[arg-type]
    return results, events


@settings(max_examples=100, deadline=None)
@given(
    logs(),
    st.lists(st.integers(1, 39), max_size=8),
    st.lists(st.integers(1, 39), max_size=8),
)
def test_memory_and_lmdb_agree_whatever_the_batching(
    items: list[Command | bytes], cuts_a: list[int], cuts_b: list[int]
) -> None:
    log = entries(1, items)
    with tempfile.TemporaryDirectory() as tmp:
        lmdb_backend = LMDBBackend(Path(tmp) / "kv.lmdb")
        try:
            machines = [
                KVStateMachine(MemoryBackend()),
                KVStateMachine(lmdb_backend),
                KVStateMachine(MemoryBackend()),
            ]
            runs = [
                _run(machines[0], log, []),
                _run(machines[1], log, cuts_a),
                _run(machines[2], log, cuts_b),
            ]
            states = [
                (m.snapshot(), m.sessions(), m.revision, m.clock_ms, m.applied_index, m.auth.state()) for m in machines
            ]
            assert runs[1] == runs[0]
            assert runs[2] == runs[0]
            assert states[1] == states[0]
            assert states[2] == states[0]
            for m in machines:
                assert m.watch.events_since(b"\0", FROM_KEY, 1) == runs[0][1]
        finally:
            lmdb_backend.close()


# --- a naive reference model -----------------------------------------------------------------------------


class Model:
    """etcd's rules, written as plainly as possible over a dict."""

    def __init__(self) -> None:
        self.data: dict[bytes, KeyValue] = {}
        self.revision = 0

    def _selected(self, key: bytes, end: bytes | None) -> list[bytes]:
        if not end:
            return [key] if key in self.data else []
        return sorted(k for k in self.data if k >= key and (end == b"\0" or k < end))

    def apply(self, command: Command) -> Result:
        if isinstance(command, Put):
            self.revision += 1
            prev = self.data.get(command.key)
            if prev is None:
                self.data[command.key] = KeyValue(command.key, command.value, self.revision, self.revision, 1)
            else:
                self.data[command.key] = KeyValue(
                    command.key, command.value, prev.create_revision, self.revision, prev.version + 1
                )
            return PutResult(self.revision, prev if command.prev_kv else None)
        if isinstance(command, DeleteRange):
            gone = [self.data[k] for k in self._selected(command.key, command.range_end)]
            if gone:
                self.revision += 1
            for kv in gone:
                del self.data[kv.key]
            return DeleteResult(self.revision, len(gone), tuple(gone) if command.prev_kv else ())
        assert isinstance(command, Range)
        return self.read(command)

    def read(self, command: Range) -> RangeResult:
        found = [self.data[k] for k in self._selected(command.key, command.range_end)]
        count = len(found)
        if command.count_only:
            return RangeResult((), count, False, self.revision)
        if command.limit:
            found = found[: command.limit]
        if command.keys_only:
            found = [KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version) for kv in found]
        return RangeResult(tuple(found), count, count > len(found), self.revision)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(puts, deletes, reads), min_size=1, max_size=60), st.lists(st.integers(1, 59), max_size=6))
def test_the_state_machine_matches_a_naive_model(items: list[Put | DeleteRange | Range], cuts: list[int]) -> None:
    model = Model()
    expected = [model.apply(c) for c in items]
    sm = KVStateMachine(MemoryBackend())
    results, _ = _run(sm, entries(1, items), cuts)
    assert results == expected
    assert sm.revision == model.revision
    assert sm.read(Range(b"\0", FROM_KEY)).kvs == tuple(model.data[k] for k in sorted(model.data))
    for key, end in [(b"a", b"b"), (b"ab", FROM_KEY), (b"b", prefix_end(b"b")), (b"c", None)]:
        for limit in (0, 1, 2):
            request = Range(key, end, limit=limit)
            assert sm.read(request) == model.read(request)
