"""One PySyncObj node of the 3-process cluster that ``bench/compare.py`` starts, driven by JSON lines on stdin.

    python bench/compare_pysyncobj_node.py --self 127.0.0.1:P1 --partners 127.0.0.1:P2,127.0.0.1:P3 --dir DIR

PySyncObj has no client protocol: the load runs inside the leader's process, proposing through the library like
raftkv's embedding API does in ``compare.py``. The replicated object is a dict with two ``@replicated`` methods:
``put`` (a write) and ``get`` (a read through the log: PySyncObj has no ReadIndex, so this is its only
linearizable read). Each command answers with one JSON line on stdout:

    {"cmd": "status"}                                   -> {"state": "leader", "leader": "...", "term": 3, ...}
    {"cmd": "bench", "op": "put", "inflight": 64, "duration": 5, "max_ops": 100000, "warmup": 0.5}
                                                        -> {"ops": ..., "seconds": ..., "latencies_us": [...], ...}
    {"cmd": "preload", "keys": 1000}                    -> {"ok": true}
    {"cmd": "write", "deadline": 30}                    -> {"ok": true, "t": <time.monotonic() of the first success>}
    {"cmd": "digest"}                                   -> {"applied": 1234, "hash": "...", "keys": 10000}
    {"cmd": "quit"}                                     -> exits

``time.monotonic()`` is CLOCK_MONOTONIC, shared by every process on the machine, so ``compare.py`` compares the
``t`` of a write with the moment it sent kill -9. The node exits when stdin closes (its parent went away).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import logging
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated  # type: ignore[import-untyped, unused-ignore]

VALUE = b"x" * 100
STATES = {0: "follower", 1: "candidate", 2: "leader"}


class KV(SyncObj):  # type: ignore[misc, unused-ignore]
    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf)
        # After SyncObj.__init__: attributes that exist before it are internal and left out of its full dumps.
        self.data: dict[str, bytes] = {}

    @replicated  # type: ignore[misc, untyped-decorator, unused-ignore]
    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    @replicated  # type: ignore[misc, untyped-decorator, unused-ignore]
    def get(self, key: str) -> bytes | None:
        return self.data.get(key)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


class Load:
    """``inflight`` proposals kept in flight with callbacks: each completion (on PySyncObj's tick thread) issues
    the next one, until ``duration`` seconds have passed or ``max_ops`` completed."""

    def __init__(self, obj: KV, op: str, inflight: int, duration: float, max_ops: int, keys: int) -> None:
        self.obj = obj
        self.op = op
        self.inflight = inflight
        self.max_ops = max_ops
        self.keys = keys
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.latencies: list[float] = []
        self.errors: dict[int, int] = {}
        self.issued = 0
        self.active = 0
        self.stopping = False
        self.duration = duration
        self.t_start = 0.0
        self.t_stop = 0.0
        self.t_end = 0.0

    def run(self) -> None:
        self.t_start = time.perf_counter()
        self.t_stop = self.t_start + self.duration
        with self.lock:
            self.active = self.inflight
        for _ in range(self.inflight):
            self.issue()
        # Bounded wait: the run's duration plus time for the last proposals to come back.
        if not self.done.wait(self.duration + 30):
            with self.lock:
                self.stopping = True
        self.t_end = time.perf_counter()  # like compare.py's drive(): the time includes draining the last ops

    def issue(self) -> None:
        with self.lock:
            if self.stopping:
                self.active -= 1
                if self.active == 0:
                    self.done.set()
                return
            i = self.issued
            self.issued += 1
        t0 = time.perf_counter()

        def callback(_result: Any, error: int) -> None:
            t1 = time.perf_counter()
            with self.lock:
                if error == FAIL_REASON.SUCCESS:
                    self.latencies.append(t1 - t0)
                else:
                    self.errors[error] = self.errors.get(error, 0) + 1
                if not self.stopping and (t1 >= self.t_stop or len(self.latencies) >= self.max_ops):
                    self.stopping = True
            self.issue()

        if self.op == "put":
            self.obj.put(f"k{i % self.keys}", VALUE, callback=callback)
        else:
            self.obj.get(f"k{i % self.keys}", callback=callback)


def status(obj: KV) -> dict[str, Any]:
    s = obj.getStatus()
    return {
        "self": str(s["self"]),
        "state": STATES.get(s["state"], str(s["state"])),
        "leader": str(s["leader"]) if s["leader"] is not None else None,
        "term": int(s["raft_term"]),
        "commit": int(s["commit_idx"]),
        "applied": int(s["last_applied"]),
        "connected": all(v == 2 for k, v in s.items() if k.startswith("partner_node_status_server_")),
    }


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench(obj: KV, req: dict[str, Any]) -> dict[str, Any]:
    op = str(req.get("op", "put"))
    inflight = int(req["inflight"])
    max_ops = int(req.get("max_ops", 1_000_000))
    keys = 1000 if op == "get" else 10_000
    if req.get("warmup"):
        Load(obj, op, inflight, float(req["warmup"]), max_ops, keys).run()
    term0 = status(obj)["term"]
    load = Load(obj, op, inflight, float(req["duration"]), max_ops, keys)
    cpu0 = cpu_seconds()
    load.run()
    cpu = cpu_seconds() - cpu0
    elapsed = max(1e-9, load.t_end - load.t_start)
    st = status(obj)
    return {
        "ops": len(load.latencies),
        "seconds": elapsed,
        "ops_per_s": len(load.latencies) / elapsed,
        "p50_ms": pct(load.latencies, 0.5) * 1000,
        "p99_ms": pct(load.latencies, 0.99) * 1000,
        "errors": sum(load.errors.values()),
        "error_kinds": {str(k): v for k, v in load.errors.items()},
        "cpu_seconds": cpu,
        "cpu_percent": 100 * cpu / elapsed,
        "term_changes": st["term"] - term0,
        "still_leader": st["state"] == "leader",
        "latencies_us": [round(x * 1e6) for x in load.latencies],  # compare.py merges the rounds' latencies
    }


def preload(obj: KV, keys: int) -> dict[str, Any]:
    done = threading.Event()
    left = [keys]
    lock = threading.Lock()

    def callback(_result: Any, _error: int) -> None:
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    for k in range(keys):
        obj.put(f"k{k}", VALUE, callback=callback)
    return {"ok": done.wait(30)}


def write_until_success(obj: KV, deadline_s: float) -> dict[str, Any]:
    """Start a put every 20 ms until one succeeds (or the deadline); report when the first one succeeded."""
    first: list[float] = []
    ok = threading.Event()
    deadline = time.monotonic() + deadline_s
    attempts = 0

    def callback(_result: Any, error: int) -> None:
        if error == FAIL_REASON.SUCCESS and not first:
            first.append(time.monotonic())
            ok.set()

    while time.monotonic() < deadline and not ok.is_set():
        attempts += 1
        obj.put(f"failover{attempts}", VALUE, callback=callback)
        ok.wait(0.02)
    return {"ok": bool(first), "t": first[0] if first else None, "attempts": attempts}


def digest(obj: KV) -> dict[str, Any]:
    """The applied index and a hash of the replicated dict, to compare the replicas once idle."""
    h = hashlib.sha256()
    for k in sorted(obj.data):
        h.update(k.encode() + b"\0" + (obj.data[k] or b"") + b"\0")
    return {"applied": int(obj.getStatus()["last_applied"]), "hash": h.hexdigest()[:16], "keys": len(obj.data)}


def set_parent_death_signal() -> None:
    """Linux: get SIGKILL if the parent dies, so a killed compare.py leaves no node behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--self", dest="self_addr", required=True)
    ap.add_argument("--partners", required=True, help="comma-separated host:port of the other nodes")
    ap.add_argument("--dir", type=Path, required=True, help="where the journal and the full dump go")
    ap.add_argument("--no-batch", action="store_true", help="appendEntriesUseBatch=False (single-request speed)")
    ap.add_argument("--append-period", type=float, default=0.1, help="appendEntriesPeriod, s (default 0.1)")
    ap.add_argument("--tick-period", type=float, default=0.05, help="autoTickPeriod, s (default 0.05)")
    args = ap.parse_args()
    set_parent_death_signal()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args.dir.mkdir(parents=True, exist_ok=True)
    conf = SyncObjConf(
        journalFile=str(args.dir / "journal"),  # mmap'd file, never fsync'd: PySyncObj has no fsync option
        fullDumpFile=str(args.dir / "dump"),  # log compaction writes the state here (a forked child does it)
        appendEntriesUseBatch=not args.no_batch,
        appendEntriesPeriod=args.append_period,
        autoTickPeriod=args.tick_period,
        dynamicMembershipChange=False,
    )
    obj = KV(args.self_addr, [p for p in args.partners.split(",") if p], conf)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "quit":
                break
            if cmd == "status":
                out = status(obj)
            elif cmd == "bench":
                out = bench(obj, req)
            elif cmd == "preload":
                out = preload(obj, int(req.get("keys", 1000)))
            elif cmd == "digest":
                out = digest(obj)
            elif cmd == "write":
                out = write_until_success(obj, float(req.get("deadline", 30)))
            else:
                out = {"error": f"unknown command {cmd!r}"}
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
    finally:
        obj.destroy()


if __name__ == "__main__":
    main()
