"""Crash test with real processes: a child writes and syncs, the parent SIGKILLs it at random moments.

The child announces each operation on a pipe *before* doing it ("A start n term", "H term commit", "C index")
and reports each completed sync ("S last commit"). After the kill, the parent knows the synced state and
every record written after it, so the legal outcomes are exactly: the synced state, then that state with
each successive record applied (a crash keeps a prefix of the written records). The reopened log must equal
one of them, entry data included, and every committed (synced) entry must be present and intact. The next
child continues on the repaired log, so recovery after recovery is exercised too.

``RAFTKV_CRASH_ROUNDS`` sets the number of rounds of the quick test (default 500, about 7 s on a quiet disk);
on a slow shared disk it stops after ``RAFTKV_CRASH_SECONDS`` (default 15) once 150 rounds are done. The slow
test runs 3,000 rounds.
"""

from __future__ import annotations

import logging
import os
import random
import select
import signal
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from raftkv.raft.types import Entry, HardState, Index, NodeId, Term
from raftkv.storage.wal import WAL

SEG = 8192  # small segments: kills land during rotations and compactions too


def payload(index: int, term: int) -> bytes:
    tag = f"{index}/{term};".encode()
    size = 20 + (index * 7) % 90
    return (tag * (size // len(tag) + 1))[:size]


def make(start: int, n: int, term: int) -> list[Entry]:
    return [Entry(Term(term), Index(i), payload(i, term)) for i in range(start, start + n)]


def child_main(wal_dir: Path, seed: int, wfd: int) -> None:
    rng = random.Random(seed)
    out = os.fdopen(wfd, "w", buffering=1)  # line-buffered: one write() per line, atomic on a pipe
    w = WAL.open(wal_dir, segment_bytes=SEG)
    hs, _ = w.initial_state()
    last, commit = w.last_index(), hs.commit
    term = hs.term + 1
    out.write(f"O {w.first_index()} {last} {commit}\n")
    for _ in range(5000):
        if last > commit + 1 and rng.random() < 0.2:
            start = rng.randint(commit + 1, last)  # overwrite an uncommitted suffix, as a follower would
            term += 1
        else:
            start = last + 1
        n = rng.choice((1, 1, 3, 8, 40, 150))
        out.write(f"A {start} {n} {term}\n")
        w.append(make(start, n, term))
        last = start + n - 1
        commit = max(commit, last - 5)
        out.write(f"H {term} {commit}\n")
        w.set_hard_state(HardState(Term(term), NodeId(1), Index(commit)))
        w.sync()
        out.write(f"S {last} {commit}\n")
        if last - w.first_index() > 600:
            c = commit - 100
            out.write(f"C {c}\n")
            w.compact(Index(c))
            out.write(f"c {c}\n")
    w.close()


@dataclass
class State:
    """A log as the parent models it: entries (bi, bi + len(terms)] with these terms, and the hard state."""

    bi: int = 0
    bt: int = 0
    terms: list[int] = field(default_factory=list)
    hs: tuple[int, int] = (0, 0)

    @property
    def last(self) -> int:
        return self.bi + len(self.terms)

    def copy(self) -> State:
        return State(self.bi, self.bt, list(self.terms), self.hs)

    def term(self, i: int) -> int:
        return self.bt if i == self.bi else self.terms[i - self.bi - 1]


def records(op: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """The records one announced operation writes, in order."""
    kind = op[0]
    if kind == "A":
        start, n, term = int(op[1]), int(op[2]), int(op[3])
        return [("e", i, term) for i in range(start, start + n)]
    if kind == "H":
        return [("h", int(op[1]), int(op[2]))]
    return [("b", int(op[1]), 0)]  # C: a boundary record (its hard-state twin changes nothing)


def apply(s: State, r: tuple[str, int, int]) -> None:
    kind, a, b = r
    if kind == "e":
        assert s.bi < a <= s.last + 1
        del s.terms[a - s.bi - 1 :]
        s.terms.append(b)
    elif kind == "h":
        s.hs = (a, b)
    else:
        s.bt = s.term(a)
        del s.terms[: a - s.bi]
        s.bi = a


def read_back(wal_dir: Path) -> State:
    w = WAL.open(wal_dir, segment_bytes=SEG)
    try:
        first, last = w.first_index(), w.last_index()
        hs, snap = w.initial_state()
        assert snap.index == first - 1
        got = State(snap.index, snap.term, [], (hs.term, hs.commit))
        for e in w.entries(first, Index(last + 1)):
            assert e.data == payload(e.index, e.term), f"entry {e.index} has damaged data"
            got.terms.append(e.term)
        assert w.term(Index(first - 1)) == snap.term
        return got
    finally:
        w.close()


def run_child(wal_dir: Path, seed: int, rng: random.Random) -> tuple[list[list[str]], bool]:
    """Fork a writer, kill it at a random moment, return the lines it reported and whether it was killed."""
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(r)
            child_main(wal_dir, seed, wfd)
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    os.close(wfd)
    buf = b""
    try:
        if rng.random() < 0.5:
            deadline = time.monotonic() + rng.uniform(0, 0.025)  # a random instant, including during open
            kill_after_appends = None
        else:
            deadline = time.monotonic() + 5.0
            kill_after_appends = rng.randint(1, 10)  # right as the child starts its n-th append
        while time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
            if kill_after_appends is not None and buf.count(b"\nA ") + buf.startswith(b"A ") >= kill_after_appends:
                break
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        while chunk := os.read(r, 65536):  # whatever it wrote before dying
            buf += chunk
    finally:
        os.close(r)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0, f"the writer failed on its own (seed {seed}); see its traceback"
    killed = os.WIFSIGNALED(status)
    complete = buf[: buf.rfind(b"\n") + 1].decode()
    return [line.split() for line in complete.splitlines()], killed


def check_round(model: State, lines: list[list[str]], got: State, seed: int) -> tuple[State, int]:
    """The candidate ``got`` equals (the model after the last sync, plus k records); returns it and k."""
    synced = model.copy()
    post: list[tuple[str, ...]] = []
    for line in lines:
        kind = line[0]
        if kind == "O":
            assert (int(line[1]), int(line[2]), int(line[3])) == (synced.bi + 1, synced.last, synced.hs[1])
        elif kind in "AHC":
            post.append(tuple(line))
        elif kind in "Sc":  # a completed sync (compact syncs too): everything announced so far is durable
            for op in post:
                for r in records(op):
                    apply(synced, r)
            post = []
            if kind == "S":
                assert (synced.last, synced.hs[1]) == (int(line[1]), int(line[2]))
    # Every committed entry that was synced is present and intact, whatever happened afterwards.
    commit = synced.hs[1]
    for i in range(max(got.bi, synced.bi) + 1, commit + 1):
        assert got.bi < i <= got.last and got.term(i) == synced.term(i), f"committed entry {i} lost (seed {seed})"
    candidate = synced.copy()
    k = 0
    if candidate == got:
        return candidate, k
    for op in post:
        for r in records(op):
            apply(candidate, r)
            k += 1
            if candidate == got:
                return candidate, k
    raise AssertionError(
        f"seed {seed}: the reopened log (boundary {got.bi}, last {got.last}, hard state {got.hs}) is not the synced "
        f"state (last {synced.last}) plus any prefix of the {k} records written after it"
    )


class _CountTornTails(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "torn tail" in record.getMessage()


def crash_rounds(tmp_path: Path, rounds: int, seed: int, budget_s: float = 1e9, min_rounds: int = 0) -> Counter[str]:
    """Up to ``rounds`` rounds; stops early once ``budget_s`` is spent and ``min_rounds`` are done."""
    rng = random.Random(seed)
    stop_at = time.monotonic() + budget_s
    wal_dir = tmp_path / "wal"
    model = State()
    stats: Counter[str] = Counter()
    torn = _CountTornTails()
    wal_log = logging.getLogger("raftkv.storage.wal")
    for n in range(rounds):
        if n >= min_rounds and time.monotonic() > stop_at:
            break
        child_seed = rng.randrange(1 << 32)
        lines, killed = run_child(wal_dir, child_seed, rng)
        wal_log.addHandler(torn)
        try:
            got = read_back(wal_dir)
        finally:
            wal_log.removeHandler(torn)
        model, k = check_round(model, lines, got, child_seed)
        stats["rounds"] += 1
        stats["killed"] += killed
        stats["unsynced records survived"] += k > 0
        stats["syncs"] += sum(1 for line in lines if line[0] == "S")
        stats["compactions"] += sum(1 for line in lines if line[0] == "c")
    stats["torn tails repaired"] = torn.count
    return stats


def test_sigkill_at_random_moments_loses_nothing_synced(tmp_path: Path) -> None:
    rounds = int(os.environ.get("RAFTKV_CRASH_ROUNDS", "500"))
    budget = float(os.environ.get("RAFTKV_CRASH_SECONDS", "15"))
    stats = crash_rounds(tmp_path, rounds, seed=20240611, budget_s=budget, min_rounds=min(rounds, 150))
    print(dict(stats))
    assert stats["rounds"] >= min(rounds, 150)
    assert stats["killed"] > stats["rounds"] // 2
    assert stats["syncs"] > stats["rounds"]


@pytest.mark.slow
def test_sigkill_at_random_moments_long(tmp_path: Path) -> None:
    stats = crash_rounds(tmp_path, 3000, seed=77)
    print(dict(stats))
    assert stats["killed"] > 1500
