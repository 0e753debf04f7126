"""Pure consensus-core throughput: committed entries per second for a 3-node cluster in one process.

The network has zero delay and the "disk" is ``MemoryStorage``, so what is measured is the core's own cost:
proposing, building AppendEntries, the followers' consistency checks and appends, acknowledgements, commit
counting, and handing committed entries to the (empty) state machine on all three nodes. Proposals arrive in
batches (default 64 entries of 100 bytes), the way the runtime batches concurrent proposals between two Readys.

    python bench/core_throughput.py [--batch 64] [--entries 200000] [--runs 5]

Prints the median of the runs and each run's figure.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import deque

from raftkv.raft.config import RaftConfig
from raftkv.raft.messages import Message
from raftkv.raft.node import RawNode
from raftkv.raft.ready import Role
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import NodeId


def build(n: int) -> dict[NodeId, RawNode]:
    ids = tuple(NodeId(i) for i in range(1, n + 1))
    nodes = {}
    for i in ids:
        cfg = RaftConfig(id=i, voters=ids, rng=random.Random(i), max_msg_entries=4096, max_inflight_msgs=256)
        nodes[i] = RawNode(cfg, MemoryStorage())
    return nodes


def pump(nodes: dict[NodeId, RawNode], queue: deque[Message]) -> int:
    """Carry out every pending Ready and deliver every message, until quiet. Returns entries applied."""
    applied = 0
    while True:
        progressed = False
        for node in nodes.values():
            if node.has_ready():
                progressed = True
                rd = node.ready()
                queue.extend(rd.messages)
                storage = node.log.storage
                if rd.entries:
                    storage.append(rd.entries)
                if rd.hard_state is not None:
                    storage.set_hard_state(rd.hard_state)
                queue.extend(rd.messages_after_sync)
                applied += len(rd.committed_entries)
                node.advance()
        while queue:
            progressed = True
            msg = queue.popleft()
            nodes[msg.dst].step(msg)
        if not progressed:
            return applied


def run(entries: int, batch: int, value_size: int) -> float:
    nodes = build(3)
    queue: deque[Message] = deque()
    leader = nodes[NodeId(1)]
    leader.campaign()
    pump(nodes, queue)
    assert leader.role is Role.LEADER
    payload = [bytes(value_size)] * batch
    target = leader.log.last_index() + entries
    started = time.perf_counter()
    while leader.log.committed < target or any(n.log.applied < target for n in nodes.values()):
        if leader.log.last_index() < target:
            leader.propose_batch(payload)
        pump(nodes, queue)
    elapsed = time.perf_counter() - started
    return entries / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64, help="entries per proposal batch (default 64)")
    p.add_argument("--entries", type=int, default=200_000, help="entries to commit per run")
    p.add_argument("--value-size", type=int, default=100, help="bytes per entry (default 100)")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    rates = [run(args.entries, args.batch, args.value_size) for _ in range(args.runs)]
    print(
        f"core throughput, 3 nodes, zero-delay network, batch {args.batch} x {args.value_size} B: "
        f"median {statistics.median(rates):,.0f} committed entries/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})"
    )


if __name__ == "__main__":
    main()
