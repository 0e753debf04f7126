"""Peer links follow the membership: a peer added, moved or removed while the transport runs."""

from __future__ import annotations

from raftkv.cli.local import free_ports
from raftkv.raft.messages import Message, TimeoutNow
from raftkv.raft.types import NodeId, Term
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.peers import Transport
from tests.runtime.cluster import wait_until


def _msg(term: int, src: int, dst: int) -> TimeoutNow:
    return TimeoutNow(Term(term), NodeId(src), NodeId(dst))


async def test_links_are_added_moved_and_removed_while_running() -> None:
    p1, p2, p3, p2b = free_ports(4)
    a1, a2, a3, a2b = (Address("127.0.0.1", p) for p in (p1, p2, p3, p2b))
    got: dict[int, list[Message]] = {1: [], 2: [], 3: []}
    async with kj_loop():
        t1 = Transport(NodeId(1), "c", {NodeId(1): a1, NodeId(2): a2}, got[1].extend, lambda: 1)
        t2 = Transport(NodeId(2), "c", {NodeId(1): a1, NodeId(2): a2}, got[2].extend, lambda: 1)
        t3 = Transport(NodeId(3), "c", {NodeId(1): a1, NodeId(3): a3}, got[3].extend, lambda: 1)
        moved: Transport | None = None
        for t, a in ((t1, a1), (t2, a2), (t3, a3)):
            await t.listen(a)
        try:
            t1.start()
            await wait_until(lambda: t1.connected(NodeId(2)), 5.0, "node 1 linked to node 2")
            assert not t1.connected(NodeId(3)) and NodeId(3) not in t1.links

            # A new member: a link starts, and its frames are accepted now that it is known.
            t1.add_peer(NodeId(3), a3)
            await wait_until(lambda: t1.connected(NodeId(3)), 5.0, "node 1 linked to the added node 3")
            t1.send([_msg(5, 1, 3)])
            await wait_until(lambda: len(got[3]) == 1, 5.0, "node 3 received node 1's message")

            # Node 2 moves to another address: the link dials the new one.
            t2.add_peer(NodeId(2), a2b)
            moved = Transport(NodeId(2), "c", {NodeId(1): a1, NodeId(2): a2b}, got[2].extend, lambda: 1)
            await moved.listen(a2b)
            await t2.close()
            t1.update_peer(NodeId(2), a2b)
            await wait_until(lambda: t1.connected(NodeId(2)), 5.0, "node 1 relinked to node 2 at its new address")
            assert t1.links[NodeId(2)].address == a2b
            t1.send([_msg(6, 1, 2)])
            await wait_until(lambda: any(m.term == 6 for m in got[2]), 5.0, "moved node 2 received node 1's message")

            # Node 3 is removed: its link stops, and what it sends is refused.
            t1.remove_peer(NodeId(3))
            assert NodeId(3) not in t1.links and not t1.connected(NodeId(3))
            refused = t1.counters.refused
            t3.start()  # node 3 still believes node 1 is a member and keeps trying
            await wait_until(lambda: t1.counters.refused > refused, 5.0, "node 1 refused the removed node 3")
            assert [m.term for m in got[1]] == []
        finally:
            for t in (t1, t2, t3, moved):
                if t is not None:
                    await t.close()
