"""A replicated counter on raftkv's embedding API: three nodes in one process, over loopback TCP.

    python examples/counter.py

Each node applies the same "add N" commands in the same order, so all three counters agree; stopping the
leader does not lose an acknowledged increment.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

from raftkv.raft.types import Entry, NodeId
from raftkv.runtime import NodeConfig, RaftNode
from raftkv.transport.address import Address


class Counter:
    """The state machine: deterministic, and the result of each command is the new value."""

    def __init__(self) -> None:
        self.value = 0

    def apply(self, entries: Sequence[Entry]) -> list[int]:
        results = []
        for e in entries:
            self.value += int(e.data)
            results.append(self.value)
        return results

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, data: bytes) -> None:
        self.value = int(data)


async def main() -> None:
    peers = {NodeId(i): Address("127.0.0.1", 7100 + i) for i in (1, 2, 3)}
    with tempfile.TemporaryDirectory() as tmp:
        counters = {i: Counter() for i in peers}
        nodes = [
            RaftNode(NodeConfig(id=i, data_dir=Path(tmp) / f"n{i}", listen_peer=peers[i], peers=peers), counters[i])
            for i in peers
        ]
        for node in nodes:
            await node.start()
        leader_id = await nodes[0].wait_for_leader()
        leader = nodes[leader_id - 1]
        for n in (1, 2, 3, 4):
            print(f"add {n} -> {await leader.propose(str(n).encode())}")
        await leader.aclose()  # hands leadership to a follower first
        rest = [n for n in nodes if n is not leader]
        new_id = await rest[0].wait_for_leader()
        new_leader = next(n for n in rest if n.id == new_id)
        index, _term, value = await new_leader.propose_indexed(b"10")
        print(f"node {leader.id} stopped; node {new_leader.id} leads; add 10 -> {value}")
        for n in rest:  # the follower learns of the commit a tick later: wait until it applied it too
            await asyncio.wait_for(n.wait_applied(index), 5.0)
        print("counters:", {n.id: counters[n.id].value for n in rest})
        for node in rest:
            await node.aclose()


if __name__ == "__main__":
    asyncio.run(main())
