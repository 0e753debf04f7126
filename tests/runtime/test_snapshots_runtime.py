"""Snapshots in the runtime: taken in the background, the log compacted, a lagging follower caught up by an
install streamed over the transport."""

from __future__ import annotations

from pathlib import Path

from raftkv.client import connect
from raftkv.kvserver import KVServer
from raftkv.raft.types import Index
from raftkv.runtime.node import RaftNode
from raftkv.runtime.statemachine import CommandLog
from tests.runtime.cluster import configs, leader_of, wait_until


async def test_a_follower_far_behind_catches_up_through_a_snapshot(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, 3, snapshot_entries=50, snapshot_trailing=10)

    def make(i: int) -> KVServer:
        return KVServer(cfgs[i])  # the KV store on LMDB in the data dir, as `raftkv serve` runs it

    nodes = [make(i) for i in range(3)]
    for n in nodes:
        await n.start()
    try:
        await wait_until(lambda: leader_of(nodes) is not None, 2.0, "a leader")
        lead = leader_of(nodes)
        assert lead is not None
        k = next(i for i, n in enumerate(nodes) if n is not lead)
        await nodes[k].aclose(transfer_leadership=False)
        live = [str(n.config.listen_client) for n in nodes if n is not nodes[k]]
        async with connect(live, cluster_id="test") as c:
            for j in range(300):
                await c.put(f"key{j:03d}", f"value{j}")
        storage = lead.running._storage
        assert storage is not None
        await wait_until(lambda: storage.wal.first_index() > 100, 5.0, "the leader compacted its log")
        # The stopped follower needs entries the leader no longer has: only a snapshot can bring it back.
        nodes[k] = make(k)
        await nodes[k].start()
        follower = nodes[k]
        sm = follower.kv
        assert sm is not None
        await wait_until(lambda: sm.revision == 300, 10.0, "the follower caught up")
        got = sm.get(b"key123")
        assert got is not None and got.value == b"value123"
        fstorage = follower.running._storage
        assert fstorage is not None
        assert fstorage.snapshots.load(fstorage.wal.first_index()) is not None, "it keeps the snapshot it received"
        # And it keeps replicating after the install.
        async with connect([str(n.config.listen_client) for n in nodes], cluster_id="test") as c:
            await c.put("after", "install")
        await wait_until(lambda: sm.get(b"after") is not None, 5.0, "replication after the install")
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)


async def test_snapshots_are_also_triggered_by_bytes(tmp_path: Path) -> None:
    cfgs = configs(tmp_path, 1, snapshot_entries=0, snapshot_bytes=20_000, snapshot_trailing=0)
    server = KVServer(cfgs[0])
    await server.start()
    try:
        await wait_until(lambda: leader_of([server]) is not None, 2.0, "a leader")
        storage = server.running._storage
        assert storage is not None
        async with connect([str(cfgs[0].listen_client)], cluster_id="test") as c:
            for j in range(15):
                await c.put(f"big{j}", "x" * 1000)
            assert storage.snapshots.load(storage.wal.first_index()) is None, "under 20 kB: no snapshot yet"
            for j in range(15, 30):
                await c.put(f"big{j}", "x" * 1000)
        await wait_until(
            lambda: storage.snapshots.load(storage.wal.first_index()) is not None, 5.0, "a snapshot after 20 kB"
        )
    finally:
        await server.aclose(transfer_leadership=False)


async def test_an_embedded_state_machine_is_snapshotted_compacted_and_restored_after_a_restart(tmp_path: Path) -> None:
    # CommandLog is an in-memory state machine with plain snapshot()/restore(): the runtime dumps it on the loop
    # right after applying (so the image matches the applied index exactly) and restores it on restart.
    cfg = configs(tmp_path, 1, snapshot_entries=40, snapshot_trailing=5)[0]
    node = RaftNode(cfg, CommandLog())
    await node.start()
    try:
        await wait_until(lambda: leader_of([node]) is not None, 2.0, "a leader")
        for j in range(100):
            await node.propose(f"c{j}".encode())
        storage = node._storage
        assert storage is not None
        await wait_until(lambda: storage.wal.first_index() > 30, 5.0, "the log compacted below a snapshot")
        sm = node.state_machine
        assert isinstance(sm, CommandLog)
        before = (sm.last_index, sm.digest, dict(sm.commands))
    finally:
        await node.aclose(transfer_leadership=False)
    again = RaftNode(cfg, CommandLog())
    await again.start()
    try:
        sm2 = again.state_machine
        assert isinstance(sm2, CommandLog)
        # The snapshot restores the entries the log no longer holds; the log tail replays the rest.
        await wait_until(lambda: sm2.last_index >= before[0], 5.0, "the restarted node re-applied its state")
        assert (sm2.last_index, sm2.digest, sm2.commands) == before
    finally:
        await again.aclose(transfer_leadership=False)


async def snapshots_taken(tmp_path: Path, growth: float) -> int:
    """Propose 200 commands of ~100 bytes with a snapshot due every 10 entries; count the snapshots taken."""
    cfg = configs(tmp_path, 1, snapshot_entries=10, snapshot_trailing=0, snapshot_bytes=0, snapshot_growth=growth)[0]
    node = RaftNode(cfg, CommandLog())
    await node.start()
    try:
        await wait_until(lambda: leader_of([node]) is not None, 2.0, "a leader")
        for j in range(200):
            await node.propose(f"{j:04d}".encode() * 25)
            # One snapshot at a time: let a due snapshot finish before the next entries arrive.
            await wait_until(lambda: not node._snapshotting, 5.0, "the snapshot to finish")
        return int(node.metrics.registry.get_sample_value("raftkv_snapshots_total") or 0)
    finally:
        await node.aclose(transfer_leadership=False)


async def test_snapshot_growth_spaces_snapshots_by_the_state_size(tmp_path: Path) -> None:
    # CommandLog's state is every command, so its snapshot grows with each one. Without the floor a snapshot
    # is due every 10 entries: ~20 of them. With growth 1.0 one is due only once the commands since the last
    # snapshot are as large as it is: the state doubles between snapshots, so about log2(200 / 10) + 1 of them.
    every = await snapshots_taken(tmp_path / "every", 0.0)
    doubling = await snapshots_taken(tmp_path / "doubling", 1.0)
    assert every >= 18, every
    assert 3 <= doubling <= 7, doubling


class FailingSnapshots(CommandLog):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def snapshot(self) -> bytes:
        self.attempts += 1
        raise RuntimeError("this state machine cannot snapshot today")


async def test_a_failing_snapshot_keeps_the_log_and_is_retried_an_interval_later(tmp_path: Path) -> None:
    cfg = configs(tmp_path, 1, snapshot_entries=20, snapshot_bytes=0)[0]
    sm = FailingSnapshots()
    node = RaftNode(cfg, sm)
    await node.start()
    try:
        await wait_until(lambda: leader_of([node]) is not None, 2.0, "a leader")
        for j in range(70):
            await node.propose(f"c{j}".encode())
        # One try per 20 applied entries (about 3 here), not one per ready-loop turn; the node keeps serving.
        assert 2 <= sm.attempts <= 4, sm.attempts
        storage = node._storage
        assert storage is not None and storage.wal.first_index() == 1, "nothing compacted without a snapshot"
        assert node.failure is None
    finally:
        await node.aclose(transfer_leadership=False)


async def test_the_core_learns_of_a_snapshot_before_the_log_is_compacted_below_it(tmp_path: Path) -> None:
    # Regression (torture seed 105): the runtime compacted the WAL (awaiting a worker thread) before telling the
    # core about the new snapshot; a leader that found a follower's next entry gone in between had only an older
    # snapshot to send, and stopped on an invariant. Every compaction must find the core already covering it.
    cfg = configs(tmp_path, 1, snapshot_entries=20, snapshot_trailing=5, snapshot_bytes=0, snapshot_growth=0.0)[0]
    node = RaftNode(cfg, CommandLog())
    await node.start()
    try:
        await wait_until(lambda: leader_of([node]) is not None, 2.0, "a leader")
        storage, core = node._storage, node.core
        assert storage is not None and core is not None
        seen: list[tuple[int, int]] = []
        compact = storage.wal.compact

        def checked_compact(index: Index) -> None:
            seen.append((int(index), int(core.latest_snapshot.index)))
            compact(index)

        storage.wal.compact = checked_compact  # type: ignore[method-assign]
        for j in range(100):
            await node.propose(f"c{j}".encode())
        await wait_until(lambda: len(seen) >= 3, 5.0, "a few compactions")
        assert all(to <= covered for to, covered in seen), seen
    finally:
        await node.aclose(transfer_leadership=False)


async def test_commands_since_the_last_snapshot_still_count_after_a_restart(tmp_path: Path) -> None:
    # With LMDB the entries applied before a restart are not re-applied, so the runtime must count them from the
    # log; otherwise a node restarted more often than --snapshot-growth's worth of commands never snapshots.
    cfg = configs(tmp_path, 1, snapshot_entries=10, snapshot_trailing=0, snapshot_bytes=0, snapshot_growth=100.0)[0]

    async def run(puts: range) -> int:
        server = KVServer(cfg)
        await server.start()
        node = server.running
        try:
            await wait_until(lambda: leader_of([node]) is not None, 2.0, "a leader")
            async with connect([str(cfg.listen_client)], cluster_id="test") as c:
                for j in puts:
                    await c.put(f"k{j % 5}", "v" * 500)
            await wait_until(lambda: not node._snapshotting, 5.0, "no snapshot running")
            return node._bytes_since_snapshot
        finally:
            await server.aclose(transfer_leadership=False)

    # The first snapshot comes at 10 entries (nothing to compare with yet); growth 100 then holds off the next.
    before = await run(range(40))
    assert before > 10_000, before
    after_restart = await run(range(0))
    assert after_restart >= 0.9 * before, (before, after_restart)
