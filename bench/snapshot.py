"""Snapshots in the real runtime (issue 7): what one costs, what it does to a cluster's writes, and restarts.

    .venv/bin/python bench/snapshot.py                 # full run: 1,000,000 keys of 100 bytes
    .venv/bin/python bench/snapshot.py --quick         # 50,000 keys, short phases: under a minute
    .venv/bin/python bench/snapshot.py --keys 100000 --json

**1. The KV state machine alone** (this process, LMDB backend as in ``raftkv serve``). The keys are loaded
through the real apply path: ``KVStateMachine.apply`` on log entries carrying ``Request(Put)`` commands of one
client session, in batches of ``--batch`` entries (one LMDB transaction each, as a node applies one Ready),
``first_incomplete`` trailing by 64 as for a client with 64 puts in flight, keys in a seeded random order (a
B-tree filled at random, as by real clients). Only the ``apply`` calls are timed. Then, ``--repeat`` times:
``snapshot_with_index()`` (the dump: one LMDB read transaction scanned into a msgspec image, as a node does in a
worker thread), ``SnapshotStore.save`` (write, fdatasync, rename, fsync the folder), ``SnapshotStore.load`` +
``read`` (both CRCs verified, image read back: what a restarting node or a follower receiving InstallSnapshot
does before restoring), and ``restore()`` into a fresh LMDB state machine (what a follower does on
InstallSnapshot). Since 2e87a63 the runtime streams instead: ``open_snapshot()`` into ``SnapshotStore.save`` and
``restore_from(file)``; those two are measured as well when the state machine has them. Memory per step: the peak
growth of this process's heap (RssAnon, sampled every 20 ms) and of its whole RSS (VmHWM, reset before each step;
it includes the LMDB file pages a scan maps in). For the nodes: their heap peaks, sampled the same way.

**2. Writes while snapshots are taken**, on three ``raftkv serve`` processes (``raftkv.cli.local.LocalCluster``,
127.0.0.1, fsync on). The cluster is preloaded with the keys either by clients (``--preload client``: several
``raftkv.connect`` clients with 64 puts in flight each) or from a backup of part 1's image
(``--preload backup``: ``raftkv snapshot restore`` into each data dir, then each node restores its state machine
at start); ``auto`` takes ``client`` up to 100,000 keys, ``backup`` above (1M puts through the service take
several minutes on this machine). Then one client keeps ``--inflight`` puts in flight (overwrites of random
existing keys, so the state stays the same size) for ``--duration`` seconds, twice: first with snapshots every
``--snapshot-entries`` applied entries (the runtime's default, 10,000, unless given) with ``--snapshot-growth 0``
(so a large state is snapshotted that often too: the worst case, chosen so the run measures writes during
snapshots; the server's default growth floor of 0.5 makes them rare with 1M keys), then — after restarting
the whole cluster — with snapshots off, as the baseline. Completions are counted in ``--window-ms`` windows. When
snapshots ran comes from the node logs (``snapshot at index I (...) in X s``, logged at the end: the snapshot
covered [t - X, t]). A window overlapping a snapshot on any node counts as "during a snapshot".

**3. Restarts with N keys** (same cluster, no load): a follower stopped with SIGTERM and started again on its
data; the same follower with its data dir wiped (same id, as in tests/e2e/test_snapshots.py), brought back by the
leader's InstallSnapshot; and the whole cluster stopped and started again, until a linearizable get succeeds.
Times count from the ``Popen`` of ``raftkv serve`` (so they include Python's start-up and imports).

The machine is shared and noisy: read the medians, and the ratios measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raftkv.backup import Backup, restore_backup, write_backup
from raftkv.cli.local import LocalCluster
from raftkv.client import StatusReport, connect
from raftkv.errors import RaftError
from raftkv.kv.commands import OpenSession, Put, Range, Request, encode_command
from raftkv.kv.keys import prefix_end
from raftkv.kv.machine import KVStateMachine
from raftkv.raft.types import ConfState, Entry, Index, NodeId, SnapshotMeta, Term
from raftkv.storage.kv_lmdb import LMDBBackend
from raftkv.storage.snapshots import SnapshotStore

CLUSTER_ID = "snapbench"
VOTERS = (NodeId(1), NodeId(2), NodeId(3))
MB = 1_000_000

# ---------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------


def note(msg: str) -> None:
    """Progress, on stderr (stdout carries the table or the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def key_of(j: int) -> bytes:
    return b"k%08d" % j


def proc_status_kib(pid: int | str, field: str) -> int:
    """A ``VmHWM``/``VmRSS`` figure of a process in KiB (0 if unavailable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return 0
    return int(m.group(1)) if m else 0


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def lmdb_file_bytes(env_dir: Path) -> int:
    """Allocated size of an LMDB data file (it is sparse up to map_size, so st_size says little)."""
    data = env_dir / "data.mdb"
    return data.stat().st_blocks * 512 if data.exists() else 0


class MemSampler:
    """Samples ``RssAnon`` (heap: where an in-memory snapshot image or a decoded one lives; not the LMDB file
    pages a scan maps in) of some processes every ``interval_s`` from a thread, keeping the largest value."""

    def __init__(self, pids: list[int], interval_s: float = 0.02) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.start_kib = {p: proc_status_kib(p, "RssAnon") for p in pids}
        self.peak_kib = dict(self.start_kib)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        for p in self.pids:
            self.peak_kib[p] = max(self.peak_kib[p], proc_status_kib(p, "RssAnon"))

    def __enter__(self) -> MemSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def peak_mb(self, pid: int) -> float:
        return round(self.peak_kib[pid] * 1024 / MB, 1)

    def growth_mb(self, pid: int) -> float:
        return round(max(0, self.peak_kib[pid] - self.start_kib[pid]) * 1024 / MB, 1)


def trim_heap() -> None:
    """Give freed heap back to the OS (glibc), so that the next step's RSS growth is its own."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def timed(fn: Callable[[], Any]) -> tuple[float, Any, dict[str, float]]:
    """(seconds, result, memory): peak growth during the call of this process's heap (``anon_mb``, sampled
    RssAnon) and of its whole RSS including file pages such as LMDB's map (``rss_mb``, VmHWM)."""
    gc.collect()
    trim_heap()
    base = proc_status_kib("self", "VmRSS")
    reset_peak_rss()
    with MemSampler([os.getpid()]) as mem:
        t0 = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - t0
    total = max(0, proc_status_kib("self", "VmHWM") - base) * 1024 / MB
    return elapsed, out, {"anon_mb": mem.growth_mb(os.getpid()), "rss_mb": round(total, 1)}


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def git_describe() -> str:
    """The commit the code under test comes from, and whether src/ differs from it (others edit the tree)."""
    here = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in src/" if dirty else "")


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# ---------------------------------------------------------------------------------------------------------------
# Part 1: the state machine alone
# ---------------------------------------------------------------------------------------------------------------


def key_order(keys: int, seed: int) -> list[int]:
    order = list(range(keys))
    random.Random(seed).shuffle(order)
    return order


def load_state_machine(sm: KVStateMachine, order: list[int], value: bytes, batch: int) -> float:
    """Apply one OpenSession, then one Request(Put) entry per key, ``batch`` entries per apply(); apply seconds."""
    now_ms = int(time.time() * 1000)
    index = sm.applied_index + 1
    sm.apply([Entry(Term(1), Index(index), encode_command(OpenSession(600_000, now_ms)))])
    session = index  # a session's id is the index of its OpenSession entry
    index += 1
    spent = 0.0
    seq = 0
    for start in range(0, len(order), batch):
        entries = []
        for j in order[start : start + batch]:
            seq += 1
            cmd = Request(session, seq, now_ms, Put(key_of(j), value), first_incomplete=max(1, seq - 63))
            entries.append(Entry(Term(1), Index(index), encode_command(cmd)))
            index += 1
        t0 = time.perf_counter()
        sm.apply(entries)
        spent += time.perf_counter() - t0
    return spent


def count_keys(sm: KVStateMachine) -> int:
    return sm.read(Range(b"k", prefix_end(b"k"), count_only=True)).count


def stat(xs: list[float]) -> dict[str, float]:
    return {"median_s": round(med(xs), 3), "min_s": round(min(xs), 3), "max_s": round(max(xs), 3)}


def check_restored(sm: KVStateMachine, index: int, keys: int, value: bytes) -> None:
    assert sm.applied_index == index, (sm.applied_index, index)
    assert count_keys(sm) == keys
    probe = sm.get(key_of(keys // 2))
    assert probe is not None and probe.value == value


def bench_machine(root: Path, keys: int, value_bytes: int, batch: int, repeat: int, seed: int) -> dict[str, Any]:
    """Part 1. Returns the figures, plus ``_image`` and ``_index`` (the image, for seeding the cluster).

    Steps: ``dump`` = snapshot_with_index() (the whole image in memory), ``save`` = SnapshotStore.save of those
    bytes, ``read`` = SnapshotStore.load + read() (what a restarting node verifies), ``restore`` = restore(bytes)
    into a fresh LMDB state machine. When the state machine streams (``open_snapshot``/``restore_from``, what
    the runtime uses since 2e87a63), also ``stream_save`` = open_snapshot() + SnapshotStore.save(chunks) (the
    runtime's snapshot, in one worker thread) and ``stream_restore`` = SnapshotStore.load + restore_from(the
    file) into a fresh LMDB state machine (the runtime's install/restart path).
    """
    value = b"x" * value_bytes
    order = key_order(keys, seed)
    src_dir = root / "src.lmdb"
    backend = LMDBBackend(src_dir)
    out: dict[str, Any] = {}
    times: dict[str, list[float]] = {}
    mems: dict[str, list[dict[str, float]]] = {}

    def record(step: str, secs: float, mem: dict[str, float]) -> None:
        times.setdefault(step, []).append(secs)
        mems.setdefault(step, []).append(mem)

    try:
        sm = KVStateMachine(backend)
        streams = hasattr(sm, "open_snapshot") and hasattr(sm, "restore_from")
        note(f"part 1: loading {keys:,} keys through KVStateMachine.apply (batches of {batch})")
        _, apply_s, mem = timed(lambda: load_state_machine(sm, order, value, batch))
        out["load"] = {
            "apply_s": round(apply_s, 3),
            "puts_per_s": round(keys / apply_s),
            "batch": batch,
            "lmdb_bytes": lmdb_file_bytes(src_dir),
            "heap_growth_mb": mem["anon_mb"],
            "rss_growth_mb": mem["rss_mb"],
        }
        order = []  # the shuffled key list is no longer needed
        image = b""
        index = 0
        restored_lmdb = 0
        for r in range(repeat):
            image = b""  # free the previous image before measuring the next dump's memory
            secs, (index, image), mem = timed(sm.snapshot_with_index)
            record("dump", secs, mem)
            meta = SnapshotMeta(Index(index), Term(1), ConfState.of_voters(VOTERS))
            store_dir = root / f"snap{r}"
            store = SnapshotStore.open(store_dir)
            secs, _, mem = timed(lambda store=store, meta=meta, image=image: store.save(meta, image))
            record("save", secs, mem)

            def read_back(store: SnapshotStore = store, index: int = index) -> bytes:
                snap = store.load(Index(index + 1))
                assert snap is not None and snap.meta.index == index
                return snap.read()

            secs, data, mem = timed(read_back)
            record("read", secs, mem)
            assert data == image
            del data
            shutil.rmtree(store_dir)
            dst_dir = root / f"dst{r}.lmdb"
            dst = LMDBBackend(dst_dir)
            try:
                fresh = KVStateMachine(dst)
                secs, _, mem = timed(lambda fresh=fresh, image=image: fresh.restore(image))
                record("restore", secs, mem)
                check_restored(fresh, index, keys, value)
                restored_lmdb = lmdb_file_bytes(dst_dir)
            finally:
                dst.close()
            shutil.rmtree(dst_dir)
            line = (
                f"dump {times['dump'][-1]:.2f} s, save {times['save'][-1]:.2f} s, read {times['read'][-1]:.2f} s, "
                f"restore {times['restore'][-1]:.2f} s"
            )
            if streams:
                store = SnapshotStore.open(store_dir)

                def stream_save(store: SnapshotStore = store) -> int:
                    with sm.open_snapshot() as img:  # type: ignore[attr-defined]
                        meta = SnapshotMeta(Index(img.index), Term(1), ConfState.of_voters(VOTERS))
                        return int(store.save(meta, img.chunks()).data_len)

                secs, size, mem = timed(stream_save)
                record("stream_save", secs, mem)
                assert size == len(image), (size, len(image))
                dst = LMDBBackend(dst_dir)
                try:
                    fresh = KVStateMachine(dst)

                    def stream_restore(
                        store: SnapshotStore = store, fresh: KVStateMachine = fresh, index: int = index
                    ) -> None:
                        snap = store.load(Index(index + 1))
                        assert snap is not None
                        with snap.open() as f:
                            fresh.restore_from(f)  # type: ignore[attr-defined]

                    secs2, _, mem = timed(stream_restore)
                    record("stream_restore", secs2, mem)
                    check_restored(fresh, index, keys, value)
                finally:
                    dst.close()
                shutil.rmtree(dst_dir)
                shutil.rmtree(store_dir)
                line += f"; streamed: save {secs:.2f} s, restore {secs2:.2f} s"
            note(f"part 1: run {r + 1}/{repeat}: {line}")
        for step, xs in times.items():
            out[step] = stat(xs)
            out[step]["heap_growth_mb"] = max(m["anon_mb"] for m in mems[step])
            out[step]["rss_growth_mb"] = max(m["rss_mb"] for m in mems[step])
        out.update(
            streams=streams,
            snapshot_bytes=len(image),
            snapshot_bytes_per_key=round(len(image) / keys, 1),
            restored_lmdb_bytes=restored_lmdb,
            index=index,
            repeat=repeat,
            process_max_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB, 1),
        )
        out["_image"] = image
        out["_index"] = index
    finally:
        backend.close()
        shutil.rmtree(src_dir, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Parts 2 and 3: a real cluster
# ---------------------------------------------------------------------------------------------------------------

_TS = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z"
SNAPSHOT_LINE = re.compile(_TS + r" .*node (\d+): snapshot at index (\d+) \(term \d+, (\d+) bytes\) in ([\d.]+) s")
EVENT_LINE = re.compile(_TS + r" \S+\s+\S+: (.*)$")


def log_time(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def snapshots_in_logs(lc: LocalCluster, since: float, until: float) -> list[dict[str, Any]]:
    """Snapshots taken by any node whose interval [end - duration, end] overlaps [since, until] (wall clock)."""
    found = []
    for i in lc.ids:
        path = lc.root / f"node{i}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = SNAPSHOT_LINE.search(line)
            if m is None:
                continue
            end = log_time(m.group(1))
            secs = float(m.group(5))
            if end - secs < until and end > since:
                found.append(
                    {"node": int(m.group(2)), "index": int(m.group(3)), "bytes": int(m.group(4)), "start": end - secs,
                     "end": end, "seconds": secs}
                )  # fmt: skip
    return sorted(found, key=lambda s: s["start"])


def log_events(lc: LocalCluster, node: int, pattern: str, since: float) -> list[tuple[float, str]]:
    """(wall time, message) of node ``node``'s log lines matching ``pattern`` at or after ``since``."""
    out = []
    path = lc.root / f"node{node}.log"
    rx = re.compile(pattern)
    for line in path.read_text(errors="replace").splitlines():
        m = EVENT_LINE.match(line)
        if m is None:
            continue
        t = log_time(m.group(1))
        if t >= since - 0.0005 and rx.search(m.group(2)):
            out.append((t, m.group(2)))
    return out


async def statuses(lc: LocalCluster, ids: list[int], timeout: float = 0.5) -> list[StatusReport]:
    async with connect(lc.endpoints(ids), cluster_id=CLUSTER_ID) as c:
        return [r for r in await c.admin.statuses(timeout) if isinstance(r, StatusReport)]


async def wait_serving(lc: LocalCluster, ids: list[int], timeout: float = 180.0) -> StatusReport:
    """Wait until every node in ``ids`` answers and they agree on a leader; the leader's report."""
    deadline = time.monotonic() + timeout
    while True:
        reports = await statuses(lc, ids)
        leaders = {r.leader for r in reports}
        if len(reports) == len(ids) and len(leaders) == 1 and None not in leaders:
            leader = leaders.pop()
            lead = [r for r in reports if r.id == leader]
            if lead:
                return lead[0]
        if exited := lc.exited():
            raise RuntimeError(f"node(s) exited: {exited}; see {lc.root}/node*.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nodes {ids} did not settle on a leader within {timeout} s: {reports}")
        await asyncio.sleep(0.05)


async def poll_node(lc: LocalCluster, node: int, until: Callable[[StatusReport], bool], timeout: float) -> float:
    """Poll ``node``'s status every 20 ms until ``until(report)``; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    async with connect(lc.endpoints([node]), cluster_id=CLUSTER_ID) as c:
        while True:
            got = [r for r in await c.admin.statuses(0.5) if isinstance(r, StatusReport)]
            if got and until(got[0]):
                return time.monotonic()
            if node in lc.exited():
                raise RuntimeError(f"node {node} exited with code {lc.exited()[node]}; see {lc.root}/node{node}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {node}: condition not reached within {timeout} s (last: {got})")
            await asyncio.sleep(0.02)


async def stop_node(lc: LocalCluster, node: int) -> float:
    """SIGTERM the node's process (by PID) and wait for it to exit; seconds it took."""
    proc = lc.procs[node]
    t0 = time.monotonic()
    proc.terminate()
    try:
        await asyncio.to_thread(proc.wait, 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait, 15)
    return time.monotonic() - t0


async def preload_clients(lc: LocalCluster, keys: int, value: bytes, clients: int, inflight: int, seed: int) -> float:
    """Put every key through ``clients`` clients with ``inflight`` puts in flight each; puts/s."""
    order = key_order(keys, seed)
    nxt = iter(order)
    done = 0
    t0 = time.perf_counter()
    last_note = t0

    async def worker(c: Any) -> None:
        nonlocal done, last_note
        for j in nxt:
            await c.put(key_of(j), value, timeout=60.0)
            done += 1
            if time.perf_counter() - last_note > 10:
                last_note = time.perf_counter()
                note(f"part 2: preloaded {done:,}/{keys:,} keys ({done / (last_note - t0):,.0f} puts/s)")

    async with contextlib.AsyncExitStack() as stack:
        cs = [
            await stack.enter_async_context(connect(lc.endpoints(), cluster_id=CLUSTER_ID, timeout=60.0))
            for _ in range(clients)
        ]
        await asyncio.gather(*(worker(c) for c in cs for _ in range(inflight)))
    return keys / (time.perf_counter() - t0)


async def run_load(
    lc: LocalCluster, keys: int, value: bytes, inflight: int, duration: float, window_s: float, seed: int
) -> dict[str, Any]:
    """Keep ``inflight`` puts of random existing keys in flight for ``duration`` s (after 1 s of warm-up)."""
    rng = random.Random(seed)
    done: list[float] = []
    latencies: list[float] = []
    errors: list[str] = []
    lead = await wait_serving(lc, lc.ids)
    pids = {i: lc.procs[i].pid for i in lc.ids}
    async with connect(lc.endpoints(), cluster_id=CLUSTER_ID, timeout=30.0) as c:
        await c.put(key_of(0), value)
        warm_until = time.perf_counter() + 1.0
        stop_at = warm_until + duration

        async def worker() -> None:
            while (now := time.perf_counter()) < stop_at:
                try:
                    await c.put(key_of(rng.randrange(keys)), value)
                except RaftError as e:
                    errors.append(str(e)[:200])
                    continue
                t = time.perf_counter()
                if now >= warm_until:
                    done.append(t)
                    latencies.append(t - now)

        workers = [asyncio.ensure_future(worker()) for _ in range(inflight)]
        await asyncio.sleep(max(0.0, warm_until - time.perf_counter()))
        wall0, perf0 = time.time(), time.perf_counter()
        cpu0 = {i: cpu_seconds(p) for i, p in pids.items()}
        with MemSampler(list(pids.values()), 0.05) as mem:
            await asyncio.gather(*workers)
        cpu1 = {i: cpu_seconds(p) for i, p in pids.items()}
    start_wall = wall0 + (warm_until - perf0)
    n = int(duration / window_s)
    counts = [0] * n
    for t in done:
        w = int((t - warm_until) / window_s)
        if 0 <= w < n:
            counts[w] += 1
    lead_after = await wait_serving(lc, lc.ids)
    lat = sorted(latencies)
    return {
        "start_wall": start_wall,
        "window_s": window_s,
        "ops_per_window": counts,
        "ops": len(done),
        "ops_per_s": round(len(done) / duration, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
        "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000, 2) if lat else None,
        "max_ms": round(lat[-1] * 1000, 1) if lat else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "leader_before": lead.id,
        "leader_after": lead_after.id,
        "term_before": lead.term,
        "term_after": lead_after.term,
        "node_cpu_percent": {i: round(100 * (cpu1[i] - cpu0[i]) / duration) for i in lc.ids},
        "node_heap_mb": {i: mem.peak_mb(p) for i, p in pids.items()},
        "node_heap_growth_mb": {i: mem.growth_mb(p) for i, p in pids.items()},
    }


def classify(run: dict[str, Any], snaps: list[dict[str, Any]], leader: int) -> dict[str, Any]:
    """Per window: does it overlap a snapshot on any node / on the leader? Medians of each kind, in ops/s."""
    w, t0 = run["window_s"], run["start_wall"]
    rates = [c / w for c in run["ops_per_window"]]
    any_snap, lead_snap = [], []
    for k in range(len(rates)):
        a, b = t0 + k * w, t0 + (k + 1) * w
        over = [s for s in snaps if s["start"] < b and s["end"] > a]
        any_snap.append(bool(over))
        lead_snap.append(any(s["node"] == leader for s in over))
    clean = [r for r, f in zip(rates, any_snap, strict=True) if not f]
    during = [r for r, f in zip(rates, any_snap, strict=True) if f]
    during_leader = [r for r, f in zip(rates, lead_snap, strict=True) if f]
    return {
        "windows": len(rates),
        "all_median": round(med(rates), 1),
        "clean_windows": len(clean),
        "clean_median": round(med(clean), 1) if clean else None,
        "during_windows": len(during),
        "during_median": round(med(during), 1) if during else None,
        "during_min": round(min(during), 1) if during else None,
        "during_leader_windows": len(during_leader),
        "during_leader_median": round(med(during_leader), 1) if during_leader else None,
        "during_leader_min": round(min(during_leader), 1) if during_leader else None,
        "window_flags": "".join(
            "L" if lf else ("s" if af else ".") for af, lf in zip(any_snap, lead_snap, strict=True)
        ),
        "window_rates": [round(r) for r in rates],
    }


async def restart_follower(lc: LocalCluster, follower: int, wipe: bool, probe: bytes, value: bytes) -> dict[str, Any]:
    """Stop a follower, optionally wipe its data dir, start it again; time status, catch-up and a local read."""
    lead = await wait_serving(lc, lc.ids)
    target = lead.commit
    stop_s = await stop_node(lc, follower)
    if wipe:
        shutil.rmtree(lc.root / f"node{follower}")
    t_wall, t0 = time.time(), time.monotonic()
    lc.start(follower)
    with MemSampler([lc.procs[follower].pid], 0.05) as mem:
        t_status = await poll_node(lc, follower, lambda r: True, 300)
        t_caught = await poll_node(lc, follower, lambda r: r.applied >= target, 600)
    async with connect(lc.endpoints([follower]), cluster_id=CLUSTER_ID, timeout=30.0) as c:
        kv = await c.get(probe, serializable=True)
    t_get = time.monotonic()
    assert kv is not None and kv.value == value, kv
    out: dict[str, Any] = {
        "node": follower,
        "wiped": wipe,
        "leader": lead.id,
        "target_index": target,
        "stop_s": round(stop_s, 3),
        "status_s": round(t_status - t0, 3),
        "caught_up_s": round(t_caught - t0, 3),
        "local_get_s": round(t_get - t0, 3),
        "peak_rss_mb": round(proc_status_kib(lc.procs[follower].pid, "VmHWM") * 1024 / MB, 1),
        "peak_heap_mb": mem.peak_mb(lc.procs[follower].pid),
    }
    if wipe:
        sent = log_events(lc, lead.id, rf"sending snapshot at index \d+ to node {follower}\b", t_wall)
        got = log_events(lc, follower, r"received the leader's snapshot", t_wall)
        installed = log_events(lc, follower, r"installed the leader's snapshot", t_wall)
        out["snapshot_sent_at_s"] = round(sent[0][0] - t_wall, 3) if sent else None
        out["snapshot_received_at_s"] = round(got[0][0] - t_wall, 3) if got else None
        out["snapshot_installed_at_s"] = round(installed[0][0] - t_wall, 3) if installed else None
        out["snapshots_sent"] = len(sent)
        out["data_dir_bytes"] = dir_bytes(lc.root / f"node{follower}")
    return out


async def restart_cluster(lc: LocalCluster, extra_args: tuple[str, ...], probe: bytes, value: bytes) -> dict[str, Any]:
    """Stop every node (SIGTERM, by PID), start them all with ``extra_args``; time a linearizable get."""
    stops = await asyncio.gather(*(stop_node(lc, i) for i in lc.ids))
    lc.extra_args = extra_args
    t0 = time.monotonic()
    lc.start_all()
    async with connect(lc.endpoints(), cluster_id=CLUSTER_ID, timeout=300.0) as c:
        kv = await c.get(probe)
    t_get = time.monotonic()
    assert kv is not None and kv.value == value, kv
    lead = await wait_serving(lc, lc.ids)
    return {
        "stop_max_s": round(max(stops), 3),
        "linearizable_get_s": round(t_get - t0, 3),
        "all_serving_s": round(time.monotonic() - t0, 3),
        "leader": lead.id,
    }


def snapshot_summary(snaps: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    by_node: dict[int, list[dict[str, Any]]] = {}
    for s in snaps:
        by_node.setdefault(s["node"], []).append(s)
    covered = 0.0  # time with at least one node snapshotting, clipped to the run
    cur_a = cur_b = None
    for s in snaps:
        a, b = max(s["start"], start), min(s["end"], end)
        if b <= a:
            continue
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                covered += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        covered += cur_b - cur_a
    return {
        "count": len(snaps),
        "per_node": {
            n: {
                "count": len(ss),
                "median_s": round(med([s["seconds"] for s in ss]), 3),
                "max_s": round(max(s["seconds"] for s in ss), 3),
                "bytes": ss[-1]["bytes"],
            }
            for n, ss in sorted(by_node.items())
        },
        "fraction_of_run_snapshotting": round(covered / (end - start), 3),
    }


async def bench_cluster(root: Path, args: argparse.Namespace, image: bytes, index: int) -> dict[str, Any]:
    keys, value = args.keys, b"x" * args.value_bytes
    probe = key_of(keys // 2)
    on_args = (
        "--snapshot-entries",
        str(args.snapshot_entries),
        "--snapshot-trailing",
        str(args.snapshot_trailing),
        "--snapshot-growth",
        str(args.snapshot_growth),
    )
    off_args = ("--snapshot-entries", "0", "--snapshot-bytes", "0")
    lc = LocalCluster(root / "cluster", cluster_id=CLUSTER_ID, extra_args=on_args)
    out: dict[str, Any] = {"snapshot_args": list(on_args), "preload": args.preload}
    try:
        t0 = time.monotonic()
        if args.preload == "backup":
            backup_file = root / "seed.raftkv"
            write_backup(
                backup_file, Backup(SnapshotMeta(Index(index), Term(1), ConfState.of_voters(VOTERS)), CLUSTER_ID, image)
            )
            for i in lc.ids:
                restore_backup(backup_file, lc.root / f"node{i}", NodeId(i), CLUSTER_ID)
            backup_file.unlink()
            seeded = time.monotonic()
            lc.start_all()
            with MemSampler([lc.procs[i].pid for i in lc.ids], 0.05) as mem:
                async with connect(lc.endpoints(), cluster_id=CLUSTER_ID, timeout=300.0) as c:
                    kv = await c.get(probe)
            out["cold_start_node_heap_mb"] = {i: mem.peak_mb(lc.procs[i].pid) for i in lc.ids}
            assert kv is not None and kv.value == value, kv
            await wait_serving(lc, lc.ids)
            out["seed_s"] = round(seeded - t0, 3)
            out["cold_start_from_backup_s"] = round(time.monotonic() - seeded, 3)
            note(f"part 2: seeded from a backup, cluster serving after {out['cold_start_from_backup_s']:.1f} s")
        else:
            lc.start_all()
            await wait_serving(lc, lc.ids)
            note(f"part 2: preloading {keys:,} keys with {args.preload_clients} clients x {args.inflight} in flight")
            rate = await preload_clients(lc, keys, value, args.preload_clients, args.inflight, args.seed)
            out["preload_puts_per_s"] = round(rate)
            note(f"part 2: preloaded at {rate:,.0f} puts/s")
        out["preload_s"] = round(time.monotonic() - t0, 3)
        out["node_peak_rss_mb_after_preload"] = {
            i: round(proc_status_kib(lc.procs[i].pid, "VmHWM") * 1024 / MB, 1) for i in lc.ids
        }

        note(f"part 2: {args.duration:g} s of puts, {args.inflight} in flight, snapshots every {args.snapshot_entries}")
        # Start the measured run from a state where no node is busy with a snapshot (the preload's last one).
        await asyncio.sleep(1.0)
        on = await run_load(lc, keys, value, args.inflight, args.duration, args.window_ms / 1000, args.seed + 1)
        end_wall = on["start_wall"] + args.duration
        await asyncio.sleep(0.5)
        snaps = snapshots_in_logs(lc, on["start_wall"], end_wall)
        on["snapshots"] = snapshot_summary(snaps, on["start_wall"], end_wall)
        on["windows"] = classify(on, snaps, on["leader_before"])
        on["snapshot_list"] = [
            {k: (round(v - on["start_wall"], 3) if k in ("start", "end") else v) for k, v in s.items()} for s in snaps
        ]
        on["node_peak_rss_mb"] = {i: round(proc_status_kib(lc.procs[i].pid, "VmHWM") * 1024 / MB, 1) for i in lc.ids}
        out["snapshots_on"] = on
        note(
            f"part 2: snapshots on: {on['ops_per_s']:,.0f} ops/s, {on['snapshots']['count']} snapshots, "
            f"flags {on['windows']['window_flags']}"
        )

        lead = await wait_serving(lc, lc.ids)
        follower = next(i for i in lc.ids if i != lead.id)
        note(f"part 3: restarting follower {follower} on its data")
        out["restart_follower"] = await restart_follower(lc, follower, False, probe, value)
        note(f"part 3: {out['restart_follower']}")
        note(f"part 3: restarting follower {follower} with its data dir wiped (InstallSnapshot)")
        out["restart_wiped_follower"] = await restart_follower(lc, follower, True, probe, value)
        note(f"part 3: {out['restart_wiped_follower']}")
        note("part 3: restarting the whole cluster (snapshots off from now on, for the baseline)")
        out["restart_cluster"] = await restart_cluster(lc, off_args, probe, value)
        note(f"part 3: {out['restart_cluster']}")

        note(f"part 2: baseline: {args.duration:g} s of puts with snapshots off")
        off = await run_load(lc, keys, value, args.inflight, args.duration, args.window_ms / 1000, args.seed + 2)
        off_end = off["start_wall"] + args.duration
        off_snaps = snapshots_in_logs(lc, off["start_wall"], off_end)
        off["snapshots"] = snapshot_summary(off_snaps, off["start_wall"], off_end)
        off["windows"] = classify(off, off_snaps, off["leader_before"])
        out["snapshots_off"] = off
        note(f"part 2: snapshots off: {off['ops_per_s']:,.0f} ops/s")

        base = off["windows"]["all_median"]
        w = on["windows"]
        out["dip"] = {
            "baseline_median_ops_per_s": base,
            "on_median_over_baseline": round(w["all_median"] / base, 3) if base else None,
            "during_median_over_baseline": round(w["during_median"] / base, 3) if base and w["during_median"] else None,
            "during_min_over_baseline": round(w["during_min"] / base, 3) if base and w["during_windows"] else None,
            "during_median_over_clean": (
                round(w["during_median"] / w["clean_median"], 3) if w["clean_median"] and w["during_median"] else None
            ),
            "during_min_over_clean": (
                round(w["during_min"] / w["clean_median"], 3) if w["clean_median"] and w["during_windows"] else None
            ),
        }
        out["cluster_data_bytes"] = {i: dir_bytes(lc.root / f"node{i}") for i in lc.ids}
    finally:
        lc.stop_all()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_report(res: dict[str, Any]) -> None:
    p = print
    cfg = res["config"]
    p(
        f"bench/snapshot.py: {cfg['keys']:,} keys x {cfg['value_bytes']} B values; {os.cpu_count()} cores, "
        f"load average {cfg['load_average_start']:.1f} at start, {res['load_average_end']:.1f} at end; "
        f"total {res['total_s']:.0f} s; code {cfg['git']}"
    )
    m = res["machine"]
    ld = m["load"]
    p("")
    p("1. KV state machine, LMDB backend, in this process")
    p(
        f"   load: {cfg['keys']:,} Request(Put) entries via apply(), batches of {ld['batch']}: {ld['apply_s']:.1f} s "
        f"({ld['puts_per_s']:,} puts/s); LMDB file {ld['lmdb_bytes'] / MB:,.0f} MB; "
        f"heap {ld['heap_growth_mb']:+,.0f} MB"
    )
    p(
        f"   {'step (' + str(m['repeat']) + ' runs; memory: peak growth in MB)':<48} {'median':>9} {'min':>9} "
        f"{'max':>9} {'heap':>9} {'RSS':>9}"
    )
    rows = [
        ("dump", "dump: snapshot_with_index() (in memory)"),
        ("save", "save: SnapshotStore.save(bytes) (fdatasync)"),
        ("read", "read: SnapshotStore.load + read() (2 CRCs)"),
        ("restore", "restore(bytes) into a fresh LMDB"),
        ("stream_save", "runtime: open_snapshot() -> SnapshotStore.save"),
        ("stream_restore", "runtime: SnapshotStore.load + restore_from(file)"),
    ]
    for step, name in rows:
        st = m.get(step)
        if st is None:
            continue
        p(
            f"   {name:<48} {fmt_s(st['median_s']):>9} {fmt_s(st['min_s']):>9} {fmt_s(st['max_s']):>9} "
            f"{st['heap_growth_mb']:>+9,.0f} {st['rss_growth_mb']:>+9,.0f}"
        )
    p(
        f"   snapshot {m['snapshot_bytes']:,} bytes ({m['snapshot_bytes_per_key']} B/key); restored LMDB file "
        f"{m['restored_lmdb_bytes'] / MB:,.0f} MB; process max RSS {m['process_max_rss_mb']:,.0f} MB"
    )
    c = res.get("cluster")
    if not c:
        return
    p("")
    p(
        f"2. Writes on 3 raftkv serve processes, {cfg['inflight']} puts in flight, {cfg['duration_s']:g} s per phase "
        f"in {cfg['window_ms']} ms windows; snapshots on = {' '.join(c['snapshot_args'])}"
    )
    if "cold_start_from_backup_s" in c:
        p(
            f"   preload: backup of part 1's image restored into 3 data dirs ({c['seed_s']:.1f} s), cluster serving "
            f"a linearizable get {c['cold_start_from_backup_s']:.1f} s after start (each node restores at start; "
            f"node heap peaks {c['cold_start_node_heap_mb']} MB)"
        )
    else:
        p(f"   preload: clients, {c['preload_puts_per_s']:,} puts/s ({c['preload_s']:.0f} s)")
    on, off = c["snapshots_on"], c["snapshots_off"]
    p(f"   {'phase':<50} {'windows':>7} {'median':>9} {'min':>9}   (ops/s per window)")
    ow, fw = on["windows"], off["windows"]
    rates_off = fw["window_rates"]
    rates_on = ow["window_rates"]
    p(f"   {'snapshots off (baseline, after restart)':<50} {fw['windows']:>7} {fmt_rate(fw['all_median']):>9} "
      f"{fmt_rate(min(rates_off) if rates_off else None):>9}")  # fmt: skip
    p(f"   {'snapshots on, all windows':<50} {ow['windows']:>7} "
      f"{fmt_rate(ow['all_median']):>9} {fmt_rate(min(rates_on) if rates_on else None):>9}")  # fmt: skip
    p(f"   {'  no node snapshotting':<50} {ow['clean_windows']:>7} {fmt_rate(ow['clean_median']):>9}")
    p(f"   {'  during a snapshot on any node':<50} {ow['during_windows']:>7} {fmt_rate(ow['during_median']):>9} "
      f"{fmt_rate(ow['during_min']):>9}")  # fmt: skip
    p(f"   {'  during a snapshot on the leader':<50} {ow['during_leader_windows']:>7} "
      f"{fmt_rate(ow['during_leader_median']):>9} {fmt_rate(ow['during_leader_min']):>9}")  # fmt: skip
    d = c["dip"]
    p(
        f"   dip vs baseline: during median {fmt_ratio(d['during_median_over_baseline'])}, during min "
        f"{fmt_ratio(d['during_min_over_baseline'])}, whole run {fmt_ratio(d['on_median_over_baseline'])}; "
        f"vs clean windows of the same run: median {fmt_ratio(d['during_median_over_clean'])}, "
        f"min {fmt_ratio(d['during_min_over_clean'])}"
    )
    for name, r in (("snapshots on", on), ("snapshots off", off)):
        p(
            f"   {name}: {r['ops_per_s']:,.0f} ops/s over the run, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"max {r['max_ms']} ms, {r['errors']} errors, leader {r['leader_before']}->{r['leader_after']} "
            f"(term {r['term_before']}->{r['term_after']}), node CPU % {r['node_cpu_percent']}"
        )
    s = on["snapshots"]
    per = ", ".join(
        f"node {n}: {v['count']} x median {v['median_s']:.2f} s (max {v['max_s']:.2f} s, {v['bytes'] / MB:,.1f} MB)"
        for n, v in s["per_node"].items()
    )
    p(
        f"   snapshots during the run: {s['count']} ({per or 'none'}); at least one node snapshotting "
        f"{100 * s['fraction_of_run_snapshotting']:.0f}% of the time"
    )
    p(f"   windows (. none, s follower snapshot, L leader snapshot): {ow['window_flags']}")
    p(
        f"   node heap (MB), peak during the run and its growth over the run's start: with snapshots "
        f"{on['node_heap_mb']} / +{on['node_heap_growth_mb']}, without {off['node_heap_mb']} / "
        f"+{off['node_heap_growth_mb']}; VmHWM (incl. LMDB file pages) after the run with snapshots "
        f"{on['node_peak_rss_mb']}"
    )
    p("")
    p(f"3. Restarts with {cfg['keys']:,} keys (no load; times from Popen of raftkv serve)")
    p(f"   {'case':<44} {'stop':>8} {'status':>8} {'caught up':>10} {'local get':>10}")
    for name, r in (
        ("follower, data intact", c["restart_follower"]),
        ("follower, data dir wiped (InstallSnapshot)", c["restart_wiped_follower"]),
    ):
        p(f"   {name:<44} {fmt_s(r['stop_s']):>8} {fmt_s(r['status_s']):>8} {fmt_s(r['caught_up_s']):>10} "
          f"{fmt_s(r['local_get_s']):>10}")  # fmt: skip
    wf = c["restart_wiped_follower"]
    p(
        f"   wiped follower: leader sent the snapshot at +{fmt_s(wf['snapshot_sent_at_s'])}, follower had it on "
        f"disk at +{fmt_s(wf['snapshot_received_at_s'])}, installed at +{fmt_s(wf['snapshot_installed_at_s'])} "
        f"({wf['snapshots_sent']} send(s)); its heap peak {wf['peak_heap_mb']:,.0f} MB, "
        f"VmHWM {wf['peak_rss_mb']:,.0f} MB"
    )
    rc = c["restart_cluster"]
    p(
        f"   whole cluster, data intact: stopped within {fmt_s(rc['stop_max_s'])}; first linearizable get "
        f"{fmt_s(rc['linearizable_get_s'])} after start; all 3 serving at {fmt_s(rc['all_serving_s'])}"
    )


def strip_private(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): strip_private(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [strip_private(v) for v in obj]
    return obj


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=None, help="keys in the store (default 1,000,000; --quick 50,000)")
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="50,000 keys, 5 s phases, 1 repetition: under a minute")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions of each part-1 step (default 3; quick 1)")
    ap.add_argument("--batch", type=int, default=64, help="entries per apply() when loading part 1")
    ap.add_argument("--duration", type=float, default=None, help="seconds per measured phase (default 20; quick 5)")
    ap.add_argument("--inflight", type=int, default=64, help="puts in flight per client")
    ap.add_argument("--window-ms", type=int, default=250)
    ap.add_argument("--snapshot-entries", type=int, default=10_000, help="--snapshot-entries of the nodes")
    ap.add_argument("--snapshot-trailing", type=int, default=1_000, help="--snapshot-trailing of the nodes")
    ap.add_argument(
        "--snapshot-growth",
        type=float,
        default=0.0,
        help="--snapshot-growth of the nodes (default 0: snapshot every --snapshot-entries whatever the state's "
        "size, the worst case, so the run measures writes during snapshots; the server's default, 0.5, would "
        "snapshot 1M keys only every ~400,000 puts)",
    )
    ap.add_argument("--preload", choices=["auto", "client", "backup"], default="auto")
    ap.add_argument("--preload-clients", type=int, default=4, help="clients for --preload client")
    ap.add_argument("--no-cluster", action="store_true", help="part 1 only")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = ap.parse_args()
    if args.keys is None:
        args.keys = 50_000 if args.quick else 1_000_000
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 5.0 if args.quick else 20.0
    if args.preload == "auto":
        args.preload = "client" if args.keys <= 100_000 else "backup"
    started = time.monotonic()
    res: dict[str, Any] = {
        "config": {
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "repeat": args.repeat,
            "batch": args.batch,
            "duration_s": args.duration,
            "inflight": args.inflight,
            "window_ms": args.window_ms,
            "snapshot_entries": args.snapshot_entries,
            "snapshot_trailing": args.snapshot_trailing,
            "snapshot_growth": args.snapshot_growth,
            "preload": args.preload,
            "cores": os.cpu_count(),
            "load_average_start": load_average(),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "git": git_describe(),
        }
    }
    with contextlib.ExitStack() as stack:
        if args.dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raftkv-snapbench-")))
        else:
            root = args.dir
            root.mkdir(parents=True, exist_ok=True)
        machine = bench_machine(root, args.keys, args.value_bytes, args.batch, args.repeat, args.seed)
        image, index = machine.pop("_image"), machine.pop("_index")
        res["machine"] = machine
        if not args.no_cluster:
            if args.preload != "backup":
                image = b""
            res["cluster"] = asyncio.run(bench_cluster(root, args, image, index))
    res["load_average_end"] = load_average()
    res["total_s"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(strip_private(res), indent=1))
    else:
        print_report(res)


if __name__ == "__main__":
    main()
