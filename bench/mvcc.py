"""The multi-version store on LMDB: reads at a past revision, and a compaction of many revisions under writes.

    PYTHONPATH=. .venv/bin/python bench/mvcc.py                     # 100k keys; 1M revisions compacted
    PYTHONPATH=. .venv/bin/python bench/mvcc.py --keys 20000 --revisions 200000   # quick

One node's state machine (``KVStateMachine`` over ``LMDBBackend``, as ``raftkv serve`` runs it), driven through
``apply`` with batches of 64 entries, as the runtime does:

1. **Reads at a past revision.** ``--keys`` keys are written, then half of them overwritten and a tenth deleted.
   A full ``Range`` at the revision before the overwrites (every key's version then is in the history, not the
   current table) is timed against the same ``Range`` at the current revision; printed per key (median of
   ``--repeat``). Point reads at the old revision too.
2. **Compaction of ``--revisions`` revisions.** That many puts over ``--hot-keys`` keys, then ``Compact`` to
   ``--revisions - 1000`` while puts go on. Printed: how long physical compaction takes (wall time from the
   command until the history holds only what is kept), and the write throughput of the apply path during it
   and after it (puts/s, median of 0.25 s windows).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from raftkv.kv import FROM_KEY, DeleteRange, KVStateMachine, Put, Range, encode_command
from raftkv.kv.commands import Compact
from raftkv.raft.types import Entry, Index, Term
from raftkv.storage.kv_lmdb import LMDBBackend

BATCH = 64


class Feeder:
    def __init__(self, sm: KVStateMachine) -> None:
        self.sm = sm
        self.index = sm.applied_index

    def apply(self, commands: list[bytes]) -> None:
        for start in range(0, len(commands), BATCH):
            chunk = commands[start : start + BATCH]
            entries = [Entry(Term(1), Index(self.index + 1 + k), c) for k, c in enumerate(chunk)]
            self.index += len(chunk)
            self.sm.apply(entries)


def past_reads(root: Path, keys: int, repeat: int, rng: random.Random) -> None:
    sm = KVStateMachine(LMDBBackend(root / "reads"))
    feed = Feeder(sm)
    names = [b"key/%08d" % k for k in range(keys)]
    feed.apply([encode_command(Put(k, b"v" * 100)) for k in names])
    old = sm.revision
    feed.apply([encode_command(Put(k, b"w" * 100)) for k in rng.sample(names, keys // 2)])
    feed.apply([encode_command(DeleteRange(k)) for k in rng.sample(names, keys // 10)])
    for label, revision in (("current revision", 0), (f"past revision {old}", old)):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            r = sm.read(Range(b"\0", FROM_KEY, revision=revision))
            times.append(time.perf_counter() - t)
        n = len(r.kvs)  # type: ignore[union-attr]
        us = statistics.median(times) / n * 1e6
        print(f"  full range at the {label:22s} {n:8,} keys  {us:6.2f} µs per key")
    sample = rng.sample(names, 2000)
    for label, revision in (("current revision", 0), (f"past revision {old}", old)):
        t = time.perf_counter()
        for k in sample:
            sm.read(Range(k, revision=revision))
        print(f"  point read at the {label:22s}                {(time.perf_counter() - t) / len(sample) * 1e6:6.2f} µs")
    sm.backend.close()  # type: ignore[attr-defined]


def compaction(root: Path, revisions: int, hot_keys: int, rng: random.Random) -> None:
    sm = KVStateMachine(LMDBBackend(root / "compact"))
    feed = Feeder(sm)
    t = time.perf_counter()
    step = 100_000
    for start in range(0, revisions, step):
        n = min(step, revisions - start)
        feed.apply([encode_command(Put(b"hot/%06d" % rng.randrange(hot_keys), b"x" * 100)) for _ in range(n)])
    print(f"  {revisions:,} revisions over {hot_keys:,} keys written in {time.perf_counter() - t:.1f} s")
    with sm.backend.read() as view:
        held = view.history_size()

    def window_rates(seconds: float, until_done: bool) -> tuple[list[float], float]:
        rates, start = [], time.perf_counter()
        window_start, count = start, 0
        while True:
            batch = [encode_command(Put(b"hot/%06d" % rng.randrange(hot_keys), b"x" * 100)) for _ in range(BATCH)]
            feed.apply(batch)
            count += BATCH
            now = time.perf_counter()
            if now - window_start >= 0.25:
                rates.append(count / (now - window_start))
                window_start, count = now, 0
            if until_done and not sm.compaction_pending:
                return rates, now - start
            if not until_done and now - start >= seconds:
                return rates, now - start

    before, _ = window_rates(3.0, until_done=False)
    feed.apply([encode_command(Compact(sm.revision - 1000))])
    during, took = window_rates(0.0, until_done=True)
    after, _ = window_rates(3.0, until_done=False)
    with sm.backend.read() as view:
        kept = view.history_size()
    print(f"  physical compaction took {took:.1f} s: the history held {held:,} records before, {kept:,} after")
    for label, rates in (("before", before), ("during compaction", during), ("after", after)):
        if rates:
            print(f"  puts/s {label:18s} median {statistics.median(rates):9,.0f}  worst window {min(rates):9,.0f}")
    sm.backend.close()  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--revisions", type=int, default=1_000_000)
    ap.add_argument("--hot-keys", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-mvcc-") as tmp:
        print(f"reads at a past revision ({args.keys:,} keys, half overwritten, a tenth deleted since):")
        past_reads(Path(tmp), args.keys, args.repeat, rng)
        print(f"compaction of {args.revisions:,} revisions while writing:")
        compaction(Path(tmp), args.revisions, args.hot_keys, rng)


if __name__ == "__main__":
    sys.exit(main())
