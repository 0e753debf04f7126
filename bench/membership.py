"""Membership benchmark: how long writes stall while the membership changes, and how fast leadership moves.

    PYTHONPATH=. .venv/bin/python bench/membership.py [--rounds 5] [--inflight 8]

An in-process cluster of real ``RaftNode``s over loopback TCP (fsync on, CommandLog state machine, default
timing: 10 ms ticks, election timeout 150-300 ms, heartbeat 50 ms). ``--inflight`` writers keep proposing
100-byte commands the whole time; every acknowledgement is timestamped. Each round:

* adds node 4 as a learner (started empty, joining), promotes it once caught up, then removes it;
* transfers leadership to the most caught-up voter, under the same load.

Printed per operation: the time the call took, and the longest gap between two acknowledged writes in a window
around it (from the call to 200 ms after it returned), against the longest gap while nothing changed. The
targets (issue 15): a gap of at most one election timeout (150 ms) while a voter is added or removed, and a
transfer in under two heartbeats (100 ms) plus catch-up.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.runtime.cluster import configs, free_ports, leader_of, wait_until

from raftkv.raft.types import NodeId
from raftkv.runtime.node import RaftNode
from raftkv.runtime.statemachine import CommandLog
from raftkv.transport.address import Address


def _max_gap(acks: list[float], start: float, end: float) -> float:
    window = [t for t in acks if start <= t <= end]
    if len(window) < 2:
        return end - start
    points = [start, *window, end]
    return max(b - a for a, b in itertools.pairwise(points))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--inflight", type=int, default=8)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="raftkv-bench-membership-"))
    cfgs = configs(root, 3)
    nodes = [RaftNode(cfg, CommandLog()) for cfg in cfgs]
    for n in nodes:
        await n.start()
    await wait_until(lambda: leader_of(nodes) is not None, 5.0, "a leader")
    acks: list[float] = []
    stop = asyncio.Event()

    async def writer() -> None:
        payload = b"x" * 100
        while not stop.is_set():
            lead = leader_of([n for n in nodes if not n.stopped.is_set()])
            if lead is None:
                await asyncio.sleep(0.005)
                continue
            try:
                await lead.propose(payload, timeout=2.0)
                acks.append(time.perf_counter())
            except Exception:
                await asyncio.sleep(0.005)

    writers = [asyncio.ensure_future(writer()) for _ in range(args.inflight)]
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in ("add learner", "promote", "remove", "transfer")}
    quiet: list[float] = []
    try:
        await asyncio.sleep(1.0)
        for rnd in range(args.rounds):
            t0 = time.perf_counter()
            await asyncio.sleep(0.5)
            quiet.append(_max_gap(acks, t0, time.perf_counter()))
            lead = leader_of(nodes)
            assert lead is not None
            peer_port, client_port = free_ports(2)
            peers = {n.id: n.config.listen_peer for n in nodes}
            peers[NodeId(4)] = Address("127.0.0.1", peer_port)
            cfg4 = dataclasses.replace(
                cfgs[0],
                id=NodeId(4),
                data_dir=root / f"node4-{rnd}",
                listen_peer=peers[NodeId(4)],
                listen_client=Address("127.0.0.1", client_port),
                peers=peers,
                join=(cfgs[0].listen_client,),  # type: ignore[arg-type]
            )
            joiner = RaftNode(cfg4, CommandLog())
            await joiner.start()

            async def timed(name: str, op: object) -> None:
                start = time.perf_counter()
                await op  # type: ignore[misc]
                done = time.perf_counter()
                await asyncio.sleep(0.2)
                results[name].append((done - start, _max_gap(acks, start, done + 0.2)))

            await timed("add learner", lead.add_learner(NodeId(4), str(cfg4.listen_peer), str(cfg4.listen_client)))
            await wait_until(
                lambda j=joiner, ld=lead: j.applied_index >= ld.applied_index - 10, 10.0, "the learner catching up"
            )
            await timed("promote", lead.promote(NodeId(4)))
            await timed("remove", lead.remove(NodeId(4)))
            await joiner.aclose(transfer_leadership=False)
            lead = leader_of(nodes)
            assert lead is not None
            await timed("transfer", lead.transfer_leadership())
            print(f"round {rnd + 1}: " + "  ".join(f"{k} {v[-1][0] * 1000:.0f} ms" for k, v in results.items()))
    finally:
        stop.set()
        for w in writers:
            w.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        for n in nodes:
            await n.aclose(transfer_leadership=False)
    print(f"\n{len(acks):,} writes acknowledged; {args.inflight} in flight; {args.rounds} rounds")
    calm = statistics.median(quiet) * 1000
    print(f"longest gap between acknowledged writes with nothing changing: median {calm:.1f} ms")
    for name, rows in results.items():
        took = [r[0] * 1000 for r in rows]
        gaps = [r[1] * 1000 for r in rows]
        print(
            f"{name:12s} took median {statistics.median(took):6.1f} ms, max {max(took):6.1f} ms;"
            f"  longest write gap median {statistics.median(gaps):6.1f} ms, max {max(gaps):6.1f} ms"
        )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
