"""Hostile input beside a write loop: each attack of tests/e2e/hostile.py against the leader, while a client
writes one key after another; the loop's p50 and p99 against its quiet value, and the leader's memory.

    PYTHONPATH=. .venv/bin/python bench/hostile.py [--duration 6]

A fresh local 3-node cluster (``raftkv serve`` processes, fsync on, the default limits but
``--max-watch-pending-bytes 1048576`` so that the stalled watcher's limit is reached in seconds). First the
write loop alone (``raftkv bench --clients 1``, ``--duration`` seconds), then once per attack: the loop again,
with the attack repeated against the leader's client port until the loop ends. The leader's anonymous resident
memory (its heap: ``RssAnon``; the LMDB file's cached pages are the data written, not the attack's) is sampled
every 100 ms. Issue 17's aim: each attack refused while the loop's p99 stays within 2x of its quiet
value and the memory stays bounded.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

from bench.local_runs import raftkv_bench, wait_leader
from tests.e2e import hostile

from raftkv.cli.local import LocalCluster
from raftkv.client import connect_sync
from raftkv.transport.address import Address


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):  # the heap: the LMDB file's cached pages are the data written
                return int(line.split()[1]) / 1024
    return 0.0


def write_loop(lc: LocalCluster, duration: float) -> dict[str, float]:
    return raftkv_bench(lc, duration, ["--clients", "1"])


def under_attack(
    lc: LocalCluster, target: Address, pid: int, attack: hostile.Attack, duration: float
) -> tuple[dict[str, float], list[str], float]:
    """The write loop while ``attack`` is repeated against ``target``: its figures, the attack's outcomes, and
    the peak resident memory of the process ``pid`` meanwhile."""
    outcomes: list[str] = []
    peak = [rss_mib(pid)]
    stop = threading.Event()

    def hammer() -> None:
        for _ in range(1000):  # bounded; in practice the loop ends first
            if stop.is_set():
                return
            outcomes.append(attack(target))

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], rss_mib(pid))

    threads = [threading.Thread(target=hammer), threading.Thread(target=sample)]
    for t in threads:
        t.start()
    try:
        loaded = write_loop(lc, duration)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    return loaded, outcomes, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=6.0, help="seconds of write loop per row (default 6)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-hostile-") as tmp:
        lc = LocalCluster(Path(tmp), extra_args=("--max-watch-pending-bytes", "1048576"))
        lc.start_all()
        try:
            lead = wait_leader(lc)
            target = lc.endpoints()[lead - 1]
            pid = lc.procs[lead].pid
            write_loop(lc, 2.0)  # warm up
            quiet = write_loop(lc, a.duration)
            print(f"leader node {lead}, RSS {rss_mib(pid):.0f} MiB", flush=True)
            columns = ("p50 ms", "p99 ms", "p99/quiet", "errors", "peak RSS")
            print(f"{'attack':28s} " + " ".join(f"{c:>{max(7, len(c))}s}" for c in columns) + "  outcome")
            print(f"{'(none: the quiet loop)':28s} {quiet['p50_ms']:7.2f} {quiet['p99_ms']:7.2f} {1:9.2f} "
                  f"{int(quiet['errors']):6d} {rss_mib(pid):8.0f}M", flush=True)  # fmt: skip

            def big_writes() -> None:
                with connect_sync(lc.endpoints(), cluster_id=lc.cluster_id) as c:
                    for _ in range(12):
                        c.put("hostile/big", b"x" * 100_000)

            attacks = dict(hostile.ATTACKS)
            attacks["a watcher that never reads"] = lambda t: hostile.stalled_watcher(t, big_writes)

            def writes_only(_target: Address) -> str:
                big_writes()
                return "1.2 MB of writes (the control: the watcher row's own writes, without the watcher)"

            attacks["(control) its writes alone"] = writes_only
            for name, attack in attacks.items():
                loaded, outcomes, peak = under_attack(lc, target, pid, attack, a.duration)
                ratio = loaded["p99_ms"] / quiet["p99_ms"]
                print(f"{name:28s} {loaded['p50_ms']:7.2f} {loaded['p99_ms']:7.2f} {ratio:9.2f} "
                      f"{int(loaded['errors']):6d} {peak:8.0f}M  x{len(outcomes)}: "
                      f"{outcomes[0] if outcomes else '(none completed)'}", flush=True)  # fmt: skip
            print(f"after every attack: leader RSS {rss_mib(pid):.0f} MiB")
        finally:
            lc.stop_all()


if __name__ == "__main__":
    main()
