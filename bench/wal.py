"""Write-ahead log benchmark: raw fsync rate, WAL throughput by batch size, recovery time and memory.

Theory of operation
-------------------
Everything runs on one disk (``--dir``, default the system temp dir) in one invocation, so the figures are
comparable. Each round measures, in this order:

* **raw fsync**: ``write(100 bytes)`` + ``fsync`` on an appended file, the physical limit of a durable append
  (and the same with ``fdatasync``, which the WAL uses);
* **WAL**: ``append(batch of 100-byte entries)`` + ``sync()`` for batch sizes 1, 16, 256 and 4096, each in a fresh
  log, plus batch 1 with ``set_hard_state`` in between (the runtime's real persist step). Only the ``append`` +
  ``sync`` calls are timed: building ``Entry`` objects is the consensus core's work, not the log's.

Before each phase ``os.sync()`` flushes writeback left by the previous one, which otherwise inflates fsync
latency on a shared disk. Rates are medians over ``--runs`` rounds. Then **recovery**: a log of
``--recovery-entries`` 100-byte entries is written once and opened in fresh subprocesses: once for the time and
peak RSS (warm page cache, and cold: the segment files dropped from the cache with ``posix_fadvise``), once
under ``tracemalloc`` for the peak of Python allocations (tracemalloc slows allocation, so that run is not timed).

Run: ``.venv/bin/python bench/wal.py`` (about two minutes); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from raftkv.raft.types import Entry, HardState, Index, NodeId, Term
from raftkv.storage.wal import WAL, list_segments

PAYLOAD = b"x" * 100
BATCH_SIZES = (1, 16, 256, 4096)


class RawAppender:
    """``write(100 bytes)`` + ``fsync``/``fdatasync`` on an appended file: the physical limit."""

    def __init__(self, path: Path, sync: Callable[[int], None]) -> None:
        self.path = path
        self.sync = sync
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)

    def step(self) -> int:
        os.write(self.fd, PAYLOAD)
        self.sync(self.fd)
        return 1

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink()


class WalAppender:
    """``append([one 100-byte entry])`` + ``sync()``; the timed slice includes building the entry (< 1 us)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wal = WAL.open(path)
        self.index = 1

    def step(self) -> int:
        es = [Entry(Term(1), Index(self.index), PAYLOAD)]
        self.wal.append(es)
        self.wal.sync()
        self.index += 1
        return 1

    def close(self) -> None:
        self.wal.close()
        shutil.rmtree(self.path)


def interleaved(steppers: list[RawAppender | WalAppender], seconds: float, slices: int = 16) -> list[float]:
    """Rates of the steppers, each run in alternating short slices so that all see the same disk weather.

    A shared disk's fsync latency drifts by 2x within seconds; measuring one after the other would compare
    different conditions. The order rotates each slice to cancel any order effect.
    """
    ops = [0] * len(steppers)
    spent = [0.0] * len(steppers)
    per_slice = seconds / slices
    for k in range(slices):
        for j in range(len(steppers)):
            m = (j + k) % len(steppers)
            step = steppers[m].step
            t0 = time.perf_counter()
            deadline = t0 + per_slice
            n = 0
            while True:
                n += step()
                now = time.perf_counter()
                if now >= deadline:
                    break
            ops[m] += n
            spent[m] += now - t0
    return [o / t for o, t in zip(ops, spent, strict=True)]


def wal_rate(directory: Path, batch: int, seconds: float, hard_state: bool = False) -> float:
    """Entries per second of append(batch) [+ set_hard_state] + sync(), timing only those calls."""
    wal_dir = directory / f"wal-{batch}"
    w = WAL.open(wal_dir)
    try:
        index = 1
        entries = 0
        timed = 0.0
        min_batches = 3
        batches = 0
        while timed < seconds or batches < min_batches:
            es = [Entry(Term(1), Index(index + k), PAYLOAD) for k in range(batch)]
            t0 = time.perf_counter()
            w.append(es)
            if hard_state:
                w.set_hard_state(HardState(Term(1), NodeId(1), Index(index)))
            w.sync()
            timed += time.perf_counter() - t0
            index += batch
            entries += batch
            batches += 1
        return entries / timed
    finally:
        w.close()
        shutil.rmtree(wal_dir)


def build_log(path: Path, n: int) -> None:
    w = WAL.open(path)
    index = 1
    while index <= n:
        count = min(4096, n - index + 1)
        w.append([Entry(Term(1), Index(index + k), PAYLOAD) for k in range(count)])
        index += count
    w.set_hard_state(HardState(Term(1), NodeId(1), Index(n)))
    w.sync()
    w.close()


def drop_from_page_cache(wal_dir: Path) -> None:
    """Evict just these files from the page cache (no root, no effect on anything else)."""
    for _, seg in list_segments(str(wal_dir)):
        fd = os.open(seg, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def peak_rss_mib() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: Linux carries that over ``execve`` from the parent's memory."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def recover_child(wal_dir: str, trace: bool) -> None:
    """In a fresh process: open the log, report time and memory as JSON on stdout."""
    import tracemalloc

    before = rss_mib()
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    w = WAL.open(wal_dir)
    seconds = time.perf_counter() - t0
    peak_traced = tracemalloc.get_traced_memory()[1] / (1 << 20) if trace else None
    out = {
        "seconds": seconds,
        "entries": w.last_index() - w.first_index() + 1,
        "rss_before_mib": before,
        "peak_rss_mib": peak_rss_mib(),
        "tracemalloc_peak_mib": peak_traced,
    }
    w.close()
    print(json.dumps(out))


def run_recovery(wal_dir: Path, *, trace: bool = False, cold: bool = False) -> dict[str, float]:
    os.sync()
    if cold:
        drop_from_page_cache(wal_dir)
    res = subprocess.run(
        [sys.executable, __file__, "--recover-child", str(wal_dir), *(["--trace"] if trace else [])],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = json.loads(res.stdout)
    return result


def filesystem_of(path: Path) -> str:
    best = ("?", "?", "")
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if str(path.resolve()).startswith(mnt) and len(mnt) >= len(best[2]):
                best = (dev, fstype, mnt)
    return f"{best[0]} ({best[1]}, mounted on {best[2]})"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files (default: the temp dir)")
    parser.add_argument("--runs", type=int, default=3, help="rounds for the throughput medians")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per throughput measurement")
    parser.add_argument("--recovery-entries", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round, 0.3 s each, 100k entries")
    parser.add_argument("--recover-child", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recover_child:
        recover_child(args.recover_child, args.trace)
        return 0
    if args.quick:
        args.runs, args.seconds, args.recovery_entries = 1, 0.3, 100_000

    root = Path(tempfile.mkdtemp(prefix="raftkv-bench-wal-", dir=args.dir))
    try:
        print(f"# raftkv WAL benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        machine = f"{os.cpu_count()} x {cpu_model()}, Linux {platform.release()}, Python {platform.python_version()}"
        print(f"# machine: {machine}")
        print(f"# disk: {root} on {filesystem_of(root)}")
        print(f"# {args.runs} rounds x {args.seconds} s per measurement; entries carry 100 data bytes")
        rows: dict[str, list[float]] = {}

        def record(name: str, value: float) -> None:
            rows.setdefault(name, []).append(value)
            print(f"  {name:<32} {value:>12,.0f} /s", flush=True)

        for r in range(args.runs):
            print(f"round {r + 1}")
            os.sync()
            steppers: list[RawAppender | WalAppender] = [
                RawAppender(root / "raw-fsync", os.fsync),
                RawAppender(root / "raw-fdatasync", os.fdatasync),
                WalAppender(root / "wal-paired"),
            ]
            try:
                rates = interleaved(steppers, 3 * args.seconds)
            finally:
                for st in steppers:
                    st.close()
            record("raw write+fsync", rates[0])
            record("raw write+fdatasync", rates[1])
            record("wal batch 1, interleaved", rates[2])
            for b in BATCH_SIZES:
                os.sync()
                record(f"wal batch {b} (entries)", wal_rate(root, b, args.seconds))
            os.sync()
            record("wal batch 1 + hard state", wal_rate(root, 1, args.seconds, hard_state=True))

        med = {k: statistics.median(v) for k, v in rows.items()}
        print("\n## medians")
        for k, v in med.items():
            print(f"  {k:<32} {v:>12,.0f} /s   (runs: {', '.join(f'{x:,.0f}' for x in rows[k])})")
        b4096 = med["wal batch 4096 (entries)"]
        # Each round measured raw and batch 1 in interleaved slices: the per-round ratio is the fair comparison.
        ratio = statistics.median(
            a / b for a, b in zip(rows["raw write+fsync"], rows["wal batch 1, interleaved"], strict=True)
        )
        verdict = "met" if ratio <= 1.3 else "MISSED"
        print(
            f"  batch 1 vs raw fsync (median of per-round ratios, interleaved): {ratio:.2f}x slower "
            f"(target <= 1.3x: {verdict})"
        )
        ok = b4096 >= 300_000
        print(f"  batch 4096: {b4096:,.0f} entries/s (target >= 300,000: {'met' if ok else 'MISSED'})")

        print(f"\n## recovery of a {args.recovery_entries:,}-entry log")
        wal_dir = root / "recovery"
        t0 = time.perf_counter()
        build_log(wal_dir, args.recovery_entries)
        size = sum(os.path.getsize(p) for _, p in list_segments(str(wal_dir)))
        n_segments = len(list_segments(str(wal_dir)))
        print(f"  built in {time.perf_counter() - t0:.1f} s: {size / (1 << 20):.0f} MiB in {n_segments} segments")
        warm = [run_recovery(wal_dir) for _ in range(args.runs)]
        cold = [run_recovery(wal_dir, cold=True) for _ in range(args.runs)]
        traced = run_recovery(wal_dir, trace=True)
        for name, results in (("warm page cache", warm), ("cold page cache", cold)):
            secs = statistics.median(x["seconds"] for x in results)
            rss = statistics.median(x["peak_rss_mib"] for x in results)
            base = statistics.median(x["rss_before_mib"] for x in results)
            each = ", ".join(f"{x['seconds']:.2f}" for x in results)
            print(
                f"  open, {name}: {secs:.2f} s (runs: {each}); peak RSS {rss:.0f} MiB ({base:.0f} MiB before opening)"
            )
        assert all(x["entries"] == args.recovery_entries for x in warm + cold)
        print(f"  tracemalloc peak during open: {traced['tracemalloc_peak_mib']:.1f} MiB")
        worst = max(x["seconds"] for x in warm + cold)
        peak = max(x["peak_rss_mib"] for x in warm + cold)
        verdict = "met" if worst < 3 and peak < 200 else "MISSED"
        print(f"  target < 3 s and < 200 MB: {verdict} (slowest {worst:.2f} s, peak RSS {peak:.0f} MiB)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
