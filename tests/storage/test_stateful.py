"""Hypothesis: random append / overwrite / compact / snapshot / hard state / sync / reopen / crash sequences
against a naive model of the log.

The model is a plain list of entries after a boundary (with the boundary's configuration), plus the hard state.
Some entries are configuration entries holding real encoded configurations (learners and addresses too): after
every step the log's ``conf_indexes()`` must be the model's, and a compaction must give the boundary the latest
configuration at or below it, as the model computes it by scanning. Besides clean reopens, a *crash*
rule cuts the newest segment file anywhere between its size at the last durable point and its current size
(optionally followed by garbage), which is what losing unsynced writes looks like. The reopened log must then
equal the model at the last durable point with some prefix of the records written since applied.

Real fsyncs cannot change what this test observes (it simulates the loss itself), so it uses a file layer
whose fsync is a no-op: the test is then bound by CPU, not by a shared disk's fsync latency.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from storage_testlib import NoSyncIO, segment_files

from raftkv.raft.membership import decode_conf, encode_conf
from raftkv.raft.storage import limit_size
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Index, Member, NodeId, SnapshotMeta, Term
from raftkv.storage.wal import WAL

SEG = 4096
IO = NoSyncIO()
Record = tuple[str, Entry | HardState]
CONFS = (
    ConfState.of_voters((NodeId(1),)),
    ConfState((Member(NodeId(1), "h1:7001", "h1:8001"), Member(NodeId(2), "h2:7001", "", learner=True))),
    ConfState(
        (
            Member(NodeId(1), "h1:7001", "h1:8001"),
            Member(NodeId(2), "h2:7001", "h2:8001"),
            Member(NodeId(3), "h3:7001", "h3:8001", learner=True),
        )
    ),
    ConfState((Member(NodeId(2), "h2:7001", "h2:8001"), Member(NodeId(3), "h3:7001", "h3:8001"))),
)
ENTRY_TYPES = (EntryType.NORMAL, EntryType.NOOP, EntryType.CONF_CHANGE)


@dataclass
class Model:
    bi: int = 0
    bt: int = 0
    conf: ConfState = field(default_factory=ConfState)
    """The boundary's configuration."""
    log: list[Entry] = field(default_factory=list)
    hs: HardState = field(default_factory=HardState)

    @property
    def last(self) -> int:
        return self.bi + len(self.log)

    def term(self, i: int) -> int:
        return self.bt if i == self.bi else self.log[i - self.bi - 1].term

    def copy(self) -> Model:
        return Model(self.bi, self.bt, self.conf, list(self.log), self.hs)

    def conf_indexes(self) -> list[int]:
        return [e.index for e in self.log if e.type is EntryType.CONF_CHANGE]

    def conf_at(self, index: int) -> ConfState:
        """The configuration as of ``index``: the latest configuration entry at or below it, else the boundary's."""
        conf = self.conf
        for e in self.log[: index - self.bi]:
            if e.type is EntryType.CONF_CHANGE:
                conf = decode_conf(e.data)
        return conf

    def apply(self, r: Record) -> None:
        kind, value = r
        if kind == "e":
            assert isinstance(value, Entry)
            del self.log[value.index - self.bi - 1 :]
            self.log.append(value)
        else:
            assert isinstance(value, HardState)
            self.hs = value

    def set_boundary(self, index: int, term: int, conf: ConfState, keep: bool) -> None:
        if keep:
            del self.log[: index - self.bi]
        else:
            self.log = []
        self.bi, self.bt, self.conf = index, term, conf


def observe(w: WAL) -> Model:
    hs, snap = w.initial_state()
    first, last = w.first_index(), w.last_index()
    assert first == snap.index + 1
    return Model(snap.index, snap.term, snap.conf, w.entries(first, Index(last + 1)), hs)


class WALMachine(RuleBasedStateMachine):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.dir = root
        self.wal = WAL.open(self.dir, segment_bytes=SEG, cache_entries=6, io=IO)
        self.model = Model()
        self.hs_written = HardState()
        self._durable_point()

    def _durable_point(self) -> None:
        """Everything so far is on disk: remember the state and the segment sizes."""
        self.durable = self.model.copy()
        self.since: list[Record] = []
        self.durable_sizes = {p.name: p.stat().st_size for p in segment_files(self.dir)}
        self.hs_written = self.model.hs

    def _last_term(self) -> int:
        return max(self.model.term(self.model.last), self.model.hs.term, 1)

    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        m = self.model
        start = data.draw(st.integers(m.bi + 1, m.last + 1), label="start")
        n = data.draw(st.integers(1, 12), label="n")
        term = self._last_term() + data.draw(st.integers(0, 1), label="term bump")
        payloads = data.draw(st.lists(st.binary(max_size=400), min_size=n, max_size=n), label="payloads")
        types = data.draw(st.lists(st.sampled_from(ENTRY_TYPES), min_size=n, max_size=n), label="types")
        confs = data.draw(st.lists(st.sampled_from(CONFS), min_size=n, max_size=n), label="confs")
        batch = [
            Entry(Term(term), Index(start + k), encode_conf(confs[k]), t)
            if t is EntryType.CONF_CHANGE
            else Entry(Term(term), Index(start + k), payloads[k], t)
            for k, t in enumerate(types)
        ]
        self.wal.append(batch)
        for e in batch:
            self.model.apply(("e", e))
            self.since.append(("e", e))

    @rule(data=st.data())
    def append_bulk(self, data: st.DataObject) -> None:
        """Many entries at once, so that logs span several segments (rotation, deletion on compaction)."""
        m = self.model
        start = data.draw(st.integers(max(m.bi + 1, m.last - 5), m.last + 1), label="start")
        n = data.draw(st.integers(20, 100), label="n")
        size = data.draw(st.integers(0, 200), label="size")
        term = self._last_term()
        batch = [Entry(Term(term), Index(i), bytes([i % 251]) * size) for i in range(start, start + n)]
        # At most one configuration entry, anywhere: a batch this size spans segments, so it may land in any part.
        at = data.draw(st.integers(-1, n - 1), label="configuration entry at")
        if at >= 0:
            conf = data.draw(st.sampled_from(CONFS), label="conf")
            batch[at] = Entry(Term(term), Index(start + at), encode_conf(conf), EntryType.CONF_CHANGE)
        self.wal.append(batch)
        for e in batch:
            self.model.apply(("e", e))
            self.since.append(("e", e))

    @rule(term_bump=st.integers(0, 2), vote=st.integers(0, 3), data=st.data())
    def set_hard_state(self, term_bump: int, vote: int, data: st.DataObject) -> None:
        commit = data.draw(st.integers(0, max(self.model.last, 0)), label="commit")
        hs = HardState(Term(self.model.hs.term + term_bump), NodeId(vote), Index(commit))
        self.wal.set_hard_state(hs)
        self.model.apply(("h", hs))
        if hs != self.hs_written:  # the log writes a record only for a changed hard state
            self.since.append(("h", hs))
            self.hs_written = hs

    @rule()
    def sync(self) -> None:
        self.wal.sync()
        self._durable_point()

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        m = self.model
        index = data.draw(st.integers(m.bi, m.last), label="compact at")
        self.wal.compact(Index(index))
        if index != m.bi:
            m.set_boundary(index, m.term(index), m.conf_at(index), keep=True)
        self._durable_point()

    @rule(data=st.data())
    def apply_snapshot(self, data: st.DataObject) -> None:
        m = self.model
        index = data.draw(st.integers(m.bi, m.last + 5), label="snapshot index")
        matching = index <= m.last and data.draw(st.booleans(), label="matching term")
        term = m.term(index) if matching else self._last_term() + 1
        conf = data.draw(st.sampled_from(CONFS), label="snapshot conf")
        self.wal.apply_snapshot(SnapshotMeta(Index(index), Term(term), conf))
        m.set_boundary(index, term, conf, keep=matching)
        self._durable_point()

    @rule()
    def reopen(self) -> None:
        self.wal.close()
        self.wal = WAL.open(self.dir, segment_bytes=SEG, cache_entries=6, io=IO)
        self._durable_point()

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        self.wal.close()
        newest = segment_files(self.dir)[-1]
        size = newest.stat().st_size
        cut = data.draw(st.integers(self.durable_sizes.get(newest.name, 0), size), label="cut at")
        tail = data.draw(st.sampled_from([b"", b"\0" * 50]) | st.binary(max_size=64), label="tail")
        with newest.open("r+b") as f:
            f.truncate(cut)
            f.seek(cut)
            f.write(tail)
        self.wal = WAL.open(self.dir, segment_bytes=SEG, cache_entries=6, io=IO)
        got = observe(self.wal)
        candidate = self.durable.copy()
        found = candidate == got
        for r in self.since:
            if found:
                break
            candidate.apply(r)
            found = candidate == got
        assert found, f"after a crash the log is not the durable state plus a prefix of the {len(self.since)} records"
        self.model = candidate
        self._durable_point()

    @invariant()
    def matches_model(self) -> None:
        m = self.model
        w = self.wal
        assert observe(w) == m
        assert w.conf_indexes() == m.conf_indexes()
        assert [w.term(Index(i)) for i in range(m.bi, m.last + 1)] == [m.term(i) for i in range(m.bi, m.last + 1)]
        if m.log:
            lo = m.bi + 1 + len(m.log) // 3
            assert w.entries(Index(lo), Index(m.last + 1), max_bytes=700) == limit_size(m.log[lo - m.bi - 1 :], 700)

    def teardown(self) -> None:
        self.wal.close()


def test_wal_matches_a_naive_model(tmp_path: Path) -> None:
    counter = itertools.count()
    examples = int(os.environ.get("RAFTKV_HYPOTHESIS_EXAMPLES", "60"))
    run_state_machine_as_test(
        lambda: WALMachine(tmp_path / f"example-{next(counter)}"),
        settings=settings(
            max_examples=examples,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
