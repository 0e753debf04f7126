"""Where one sequential put's time goes: a per-stage breakdown from trace points in all four processes.

    PYTHONPATH=. .venv/bin/python bench/trace_put.py                  # 300 puts back to back, 300 after 50 ms idle
    PYTHONPATH=. .venv/bin/python bench/trace_put.py --puts 100 --idle-ms 0,5,50
    PYTHONPATH=. .venv/bin/python bench/trace_put.py --batch 64 --idle-ms 0  # 64 puts at once, one batch

Three ``raftkv serve`` processes (fsync on, default settings) and one client in this process, all with
``RAFTKV_TRACE`` set (``raftkv.trace``: stage timestamps on the machine's monotonic clock, one file per
process). The client puts one key after another, one in flight, first back to back, then with a pause before
each (``--idle-ms``: what a lock holder, a configuration write or ``make demo`` does between writes). For each
put the stages are matched across the processes by log index, and the script prints each stage's median and
p90 in milliseconds:

1. client -> leader: the batch leaves the client until the leader's ``execute`` starts (capnp, one way);
2. propose: the command is decoded, stamped and appended by the core;
3. leader out: the ready loop sends the AppendEntries;
4. leader -> follower: until the follower's loop has it (frames, one way);
5. follower wakes: the core steps it and the ready loop takes the Ready;
6. follower write: the Ready is planned and the WAL write done (the bytes handed to the file);
7. follower fsync;
8. follower ack: the acknowledgement is sent;
9. follower -> leader: until the leader's loop has it;
10. commit: the leader's core commits (the first acknowledgement, with the leader's own write or the other
    follower's: whichever the core needed);
11. apply: the state machine applies it;
12. reply: the ``execute`` coroutine resumes and returns;
13. leader -> client: the results reach the client (capnp, one way).

The follower is the one whose acknowledgement came first. The leader's own write and fsync run beside stages
4-9 and are printed apart, with the time an acknowledgement waited for the leader's loop to leave its own
fsync. With ``--batch N`` each step makes N puts in one loop turn (the client sends them as one ``execute``
batch, as 64 clients in flight do) and the stages are the batch's. Each trace point costs ~1 µs, included in
the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

STAGES = [
    ("client -> leader", "c.send", "s.exec"),
    ("propose", "s.exec", "s.prop"),
    ("leader out", "s.prop", "L:n.ae.out"),
    ("leader -> follower", "L:n.ae.out", "F:n.ae.in"),
    ("follower wakes", "F:n.ae.in", "F:n.ready"),
    ("follower write", "F:n.ready", "F:n.written"),
    ("follower fsync", "F:n.written", "F:n.synced"),
    ("follower ack out", "F:n.synced", "F:n.ack.out"),
    ("follower -> leader", "F:n.ack.out", "L:n.ack.in"),
    ("commit", "L:n.ack.in", "L:n.commit"),
    ("apply", "L:n.commit", "L:n.applied"),
    ("reply", "L:n.applied", "s.done"),
    ("leader -> client", "s.done", "c.recv"),
]


OWN = "leader's own write + fsync (beside 4-9)"
OWN_WRITE = "  of which the write (from 3.)"
OWN_SYNC = "  of which the fsync"
ACK_WAIT = "9. spent in the leader's own fsync"

Events = dict[str, list[tuple[int, int]]]
"""stage -> sorted (time ns, key) of one process."""


def load(path: Path) -> Events:
    out: Events = defaultdict(list)
    for line in path.read_text().splitlines():
        t, stage, key = line.split()
        out[stage].append((int(t), int(key) if key.lstrip("-").isdigit() else -1))
    for v in out.values():
        v.sort()
    return out


def first_after(events: Events, stage: str, t: int, min_key: int = -1) -> tuple[int, int] | None:
    """The first ``stage`` event at or after time ``t`` whose key is at least ``min_key``."""
    seq = events.get(stage, [])
    k = bisect.bisect_left(seq, (t, -(10**18)))
    for item in seq[k:]:
        if item[1] >= min_key:
            return item
    return None


def breakdown(client: Events, nodes: dict[int, Events]) -> list[dict[str, float]]:
    """Stage times (ms) of each put the client sent, matched by time and log index."""
    rows = []
    for (t_send, _n), (t_recv, _m) in zip(client["c.send"], client["c.recv"], strict=False):
        candidates = [(i, first_after(ev, "s.exec", t_send)) for i, ev in nodes.items()]
        found = [(e[0], i) for i, e in candidates if e is not None and e[0] <= t_recv]
        if not found:
            continue
        t_exec, leader = min(found)
        lev = nodes[leader]
        prop = first_after(lev, "s.prop", t_exec)
        if prop is None or prop[0] > t_recv:
            continue
        t_prop, index = prop
        at: dict[str, int] = {"c.send": t_send, "c.recv": t_recv, "s.exec": t_exec, "s.prop": t_prop}
        for stage in ("n.ae.out", "n.ack.in", "n.commit", "n.applied", "n.written", "n.synced"):
            e = first_after(lev, stage, t_prop, index)
            if e is not None:
                at["L:" + stage] = e[0]
        done = first_after(lev, "s.done", t_prop)
        if done is not None:
            at["s.done"] = done[0]
        best: tuple[int, int] | None = None
        for i, ev in nodes.items():
            if i == leader:
                continue
            ack = first_after(ev, "n.ack.out", t_prop, index)
            if ack is not None and (best is None or ack[0] < best[0]):
                best = (ack[0], i)
        if best is None:
            continue
        fev = nodes[best[1]]
        for stage in ("n.ae.in", "n.ready", "n.written", "n.synced", "n.ack.out"):
            e = first_after(fev, stage, t_prop, index)
            if e is not None:
                at["F:" + stage] = e[0]
        if not all(a in at and b in at for _name, a, b in STAGES):
            continue
        row = {name: (at[b] - at[a]) / 1e6 for name, a, b in STAGES}
        row["total"] = (t_recv - t_send) / 1e6
        if "L:n.synced" in at:
            row[OWN] = (at["L:n.synced"] - t_prop) / 1e6
            if "L:n.written" in at:
                row[OWN_WRITE] = (at["L:n.written"] - at["L:n.ae.out"]) / 1e6
                row[OWN_SYNC] = (at["L:n.synced"] - at["L:n.written"]) / 1e6
            # How long the acknowledgement waited in the leader's socket while its loop was in its own fsync.
            row[ACK_WAIT] = max(0, min(at["L:n.synced"], at["L:n.ack.in"]) - at["F:n.ack.out"]) / 1e6
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, float]], label: str) -> str:
    names = [name for name, _a, _b in STAGES] + ["total", OWN, OWN_WRITE, OWN_SYNC, ACK_WAIT]
    lines = [f"{label}: {len(rows)} puts matched", f"  {'stage':44s} {'p50 ms':>8s} {'p90 ms':>8s}"]
    for k, name in enumerate(names):
        xs = sorted(r[name] for r in rows if name in r)
        if not xs:
            continue
        number = f"{k + 1:2d}." if k < len(STAGES) else "   "
        lines.append(
            f"  {number} {name:40s} {statistics.median(xs):8.3f} {xs[min(len(xs) - 1, int(len(xs) * 0.9))]:8.3f}"
        )
    return "\n".join(lines)


async def run(
    puts: int, idles_ms: list[float], root: Path, trace_dir: Path, batch: int = 1
) -> dict[float, tuple[float, float]]:
    from raftkv import trace
    from raftkv.cli.local import LocalCluster
    from raftkv.client import connect

    lc = LocalCluster(root, cluster_id="trace")
    lc.start_all()
    windows: dict[float, tuple[float, float]] = {}
    try:
        async with connect(lc.endpoints(), cluster_id="trace", timeout=30.0) as c:
            for _ in range(50):
                await c.put("warm-up", "x")
            trace.enable(str(trace_dir))
            for idle in idles_ms:
                start = time.monotonic_ns()
                for k in range(puts):
                    if idle:
                        await asyncio.sleep(idle / 1000)
                    if batch == 1:
                        await c.put(f"trace/{k}", "v" * 64)
                    else:  # one loop turn: the client sends them as one execute batch
                        await asyncio.gather(*(c.put(f"trace/{k}/{j}", "v" * 64) for j in range(batch)))
                windows[idle] = (start, time.monotonic_ns())
            trace.flush()
    finally:
        lc.stop_all()
    return windows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--puts", type=int, default=300)
    ap.add_argument("--idle-ms", default="0,50", help="pauses before each put, one run each (default 0,50)")
    ap.add_argument("--batch", type=int, default=1, help="puts made at once per step (one execute batch; default 1)")
    a = ap.parse_args()
    idles = [float(x) for x in a.idle_ms.split(",")]
    with tempfile.TemporaryDirectory(prefix="raftkv-trace-") as tmp:
        trace_dir = Path(tmp) / "trace"
        os.environ["RAFTKV_TRACE"] = str(trace_dir)  # the node processes inherit it
        windows = asyncio.run(run(a.puts, idles, Path(tmp) / "cluster", trace_dir, a.batch))
        files = {int(p.stem): load(p) for p in trace_dir.glob("*.trace")}
        client = files.pop(os.getpid(), None)
        if client is None or len(files) < 3:
            print(f"trace files missing: client {client is not None}, nodes {len(files)}", file=sys.stderr)
            return 1
        what = "puts" if a.batch == 1 else f"batches of {a.batch} puts"
        for idle, (lo, hi) in windows.items():
            part = {s: [e for e in v if lo <= e[0] <= hi] for s, v in client.items()}
            rows = breakdown(part, files)
            print(
                summarize(
                    rows,
                    f"{a.puts} sequential {what}, {idle:g} ms idle before each",
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
