"""A learner joins a cluster that holds many keys: how long it takes to catch up, and what it costs the writes.

    PYTHONPATH=. .venv/bin/python bench/learner_join.py                  # 1,000,000 keys of 100 bytes
    PYTHONPATH=. .venv/bin/python bench/learner_join.py --keys 50000     # quick

Three ``raftkv serve`` processes (fsync on, default settings) are seeded from a backup of an LMDB store holding
``--keys`` keys (built here through the real apply path, as bench/snapshot.py does), so the leader's log starts
after a snapshot of the whole store. One client keeps ``--inflight`` puts of random existing keys in flight for
the whole run. After ``--before`` seconds: ``raftkv member add 4 --learner`` (through the client API) and node 4
starts empty with ``--join``; the leader has no log for it, so it streams its snapshot. "Caught up" is when the
leader reports node 4 less than 1,000 entries behind. Printed: the catch-up time and the snapshot's size (so its
streaming rate), and the write throughput before the join, while node 4 catches up, and after, in
``--window-ms`` windows (median and the worst window). Target (issue 15): catch-up at snapshot-streaming speed,
the leader's write throughput never below half of before while it streams.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.snapshot import CLUSTER_ID, VOTERS, key_of, key_order, load_state_machine, note, wait_serving

from raftkv.backup import Backup, restore_backup, write_backup
from raftkv.cli.local import LocalCluster, free_ports
from raftkv.client import connect
from raftkv.errors import RaftError
from raftkv.kv.machine import KVStateMachine
from raftkv.raft.types import ConfState, Index, NodeId, SnapshotMeta, Term
from raftkv.storage.kv_lmdb import LMDBBackend


def build_image(root: Path, keys: int, value: bytes, seed: int) -> tuple[int, bytes]:
    sm = KVStateMachine(LMDBBackend(root / "image-kv"))
    load_state_machine(sm, key_order(keys, seed), value, batch=512)
    index, image = sm.snapshot_with_index()
    sm.backend.close()  # type: ignore[attr-defined]
    return index, image


def windows(done: list[float], start: float, end: float, width: float) -> list[float]:
    n = max(1, int((end - start) / width))
    counts = [0] * n
    for t in done:
        k = int((t - start) / width)
        if 0 <= k < n:
            counts[k] += 1
    return [c / width for c in counts]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--before", type=float, default=10.0, help="seconds of load before the join")
    ap.add_argument("--after", type=float, default=10.0, help="seconds of load after node 4 caught up")
    ap.add_argument("--window-ms", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--learner-on-tmpfs",
        action="store_true",
        help="keep node 4's data dir in /dev/shm (tells a shared-disk effect from a CPU one)",
    )
    ap.add_argument("--profile-leader", type=Path, default=None, help="py-spy the leader for 8 s from the join")
    ap.add_argument(
        "--learner-nice",
        type=int,
        default=0,
        help="run node 4 at this niceness (on one machine, keeps its restore from starving the members' CPU)",
    )
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="raftkv-bench-learner-"))
    value = b"x" * args.value_bytes
    t0 = time.monotonic()
    index, image = build_image(root, args.keys, value, args.seed)
    note(f"built a store of {args.keys:,} keys ({len(image) / 1e6:.1f} MB image) in {time.monotonic() - t0:.1f} s")
    lc = LocalCluster(root / "cluster", cluster_id=CLUSTER_ID)
    conf = ConfState.of_voters(VOTERS, {i: f"127.0.0.1:{lc.peer[i]}" for i in VOTERS})
    backup_file = root / "seed.raftkv"
    write_backup(backup_file, Backup(SnapshotMeta(Index(index), Term(1), conf), CLUSTER_ID, image))
    for i in lc.ids:
        restore_backup(backup_file, lc.root / f"node{i}", NodeId(i), CLUSTER_ID)
    backup_file.unlink()
    image_mb = len(image) / 1e6
    del image
    lc.start_all()
    done: list[float] = []
    try:
        await wait_serving(lc, lc.ids)
        rng = random.Random(args.seed)
        async with connect(lc.endpoints(), cluster_id=CLUSTER_ID, timeout=60.0) as c:
            await c.put(key_of(0), value)
            stop = asyncio.Event()

            async def worker() -> None:
                while not stop.is_set():
                    try:
                        await c.put(key_of(rng.randrange(args.keys)), value)
                        done.append(time.perf_counter())
                    except RaftError:
                        await asyncio.sleep(0.01)

            workers = [asyncio.ensure_future(worker()) for _ in range(args.inflight)]
            start = time.perf_counter()
            await asyncio.sleep(args.before)
            lc.peer[4], lc.client[4] = free_ports(2)
            spy = None
            if args.profile_leader is not None:
                lead = next(m.id for m in await c.members(timeout=5.0) if m.is_leader)
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "-d", "8", "-r", "200",
                     "-o", str(args.profile_leader), "-p", str(lc.procs[lead].pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            join_at = time.perf_counter()
            await c.add_member(4, f"127.0.0.1:{lc.peer[4]}", f"127.0.0.1:{lc.client[4]}", learner=True, timeout=30)
            if args.learner_on_tmpfs:
                shm = Path(tempfile.mkdtemp(prefix="raftkv-learner-", dir="/dev/shm"))
                (lc.root / "node4").symlink_to(shm)
            lc.start_joining(4, via=[1, 2, 3])
            if args.learner_nice:
                os.setpriority(os.PRIO_PROCESS, lc.procs[4].pid, args.learner_nice)
            caught = None
            while caught is None and time.perf_counter() - join_at < 600:
                members = {m.id: m for m in await c.members(timeout=5.0)}
                m4 = members.get(4)
                if m4 is not None and m4.lag is not None and m4.lag < 1000:
                    caught = time.perf_counter()
                    break
                await asyncio.sleep(0.1)
            assert caught is not None, "node 4 never caught up"
            await asyncio.sleep(args.after)
            end = time.perf_counter()
            if spy is not None:
                spy.wait(timeout=60)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        lc.stop_all()
    width = args.window_ms / 1000
    before = windows(done, start + 1.0, join_at, width)  # the first second is warm-up
    during = windows(done, join_at, caught, width)
    after = windows(done, caught, end, width)
    base = statistics.median(before)
    stalls = [f"{k * width:.2f}" for k, v in enumerate(during) if v < base / 2]
    if stalls:
        print(f"windows below half while node 4 catches up start at (s after `member add`): {', '.join(stalls)}")
    print(f"node logs: {lc.root}  (`member add` at {time.time() - (time.perf_counter() - join_at):.3f} wall)")
    print(f"\n{args.keys:,} keys, {args.inflight} puts in flight, {args.window_ms} ms windows")
    took = caught - join_at
    print(f"node 4 caught up {took:.1f} s after `member add`: a {image_mb:.1f} MB snapshot, {image_mb / took:.1f} MB/s")
    for name, ws in (("before the join", before), ("while node 4 catches up", during), ("after", after)):
        if ws:
            print(
                f"  {name:24s} puts/s median {statistics.median(ws):8,.0f}  worst window {min(ws):8,.0f}"
                f"  ({min(ws) / base:.2f}x the median before)"
            )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
