"""The bundled state machines: ReplicatedDict on its own, and replicated by real nodes through a snapshot."""

from __future__ import annotations

from pathlib import Path

from raftkv.raft.types import Entry, EntryType, Index, Term
from raftkv.runtime.node import RaftNode
from raftkv.runtime.statemachine import ReplicatedDict
from tests.runtime.cluster import configs, start_and_elect, wait_until


def entries(*datas: bytes, first: int = 1) -> list[Entry]:
    return [Entry(Term(1), Index(first + k), d, EntryType.NORMAL) for k, d in enumerate(datas)]


def test_puts_overwrite_and_each_result_is_the_log_index() -> None:
    sm = ReplicatedDict()
    put = ReplicatedDict.put_command
    results = sm.apply(entries(put(b"a", b"1"), put(b"b", b"2"), put(b"a", b"3")))
    assert results == [1, 2, 3]
    assert sm.data == {b"a": b"3", b"b": b"2"}
    assert sm.last_index == 3


def test_a_command_that_does_not_decode_is_ignored_alike_everywhere() -> None:
    sm = ReplicatedDict()
    results = sm.apply(entries(b"\xc1 not msgpack", ReplicatedDict.put_command(b"k", b"v"), b"\x92\x01\x02"))
    assert results == [None, 2, None]  # [1, 2] decodes as msgpack but is not a pair of bytes
    assert sm.data == {b"k": b"v"}
    assert sm.last_index == 3  # still applied: the index moves on


def test_the_snapshot_restores_the_same_dict_and_does_not_depend_on_insertion_order() -> None:
    put = ReplicatedDict.put_command
    one, two = ReplicatedDict(), ReplicatedDict()
    one.apply(entries(put(b"x", b"1"), put(b"y", b"2")))
    two.apply(entries(put(b"y", b"2"), put(b"x", b"1")))
    assert one.snapshot() == two.snapshot()  # replicas with equal state produce identical images
    back = ReplicatedDict()
    back.apply(entries(put(b"stale", b"gone")))
    back.restore(one.snapshot())
    assert back.data == {b"x": b"1", b"y": b"2"}
    assert back.last_index == 2


async def test_three_nodes_replicate_the_dict_and_a_restarted_node_restores_it_from_a_snapshot(
    tmp_path: Path,
) -> None:
    cfgs = configs(tmp_path, 3, snapshot_entries=30, snapshot_trailing=5)
    nodes = [RaftNode(c, ReplicatedDict()) for c in cfgs]
    lead = await start_and_elect(nodes)
    try:
        # Keys a0..a39 are written once, early: after compaction only the snapshot holds them.
        puts = [(f"a{j}", f"v{j}") for j in range(40)] + [(f"b{j % 20}", f"w{j}") for j in range(80)]
        for key, value in puts:
            await lead.propose(ReplicatedDict.put_command(key.encode(), value.encode()))
        want = {key.encode(): value.encode() for key, value in puts}

        def dicts() -> list[dict[bytes, bytes]]:
            return [n.state_machine.data for n in nodes if isinstance(n.state_machine, ReplicatedDict)]

        await wait_until(lambda: all(d == want for d in dicts()), 5.0, "every replica holds the same dict")
        follower = next(n for n in nodes if n is not lead)
        storage = follower._storage
        assert storage is not None
        await wait_until(lambda: storage.wal.first_index() > 45, 5.0, "the follower compacted below a snapshot")
        await follower.aclose(transfer_leadership=False)
        again = RaftNode(cfgs[nodes.index(follower)], ReplicatedDict())
        nodes[nodes.index(follower)] = again
        await again.start()
        sm = again.state_machine
        assert isinstance(sm, ReplicatedDict)
        await wait_until(lambda: sm.data == want, 5.0, "the restarted node restored the dict")
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)
