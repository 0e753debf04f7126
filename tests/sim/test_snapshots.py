"""Snapshots and log compaction in the simulator (Raft §7): the snapshot issue's named scenarios.

Nodes snapshot every ``snapshot_every`` applied entries and compact their logs, keeping ``snapshot_trailing``
entries below the snapshot. The checker verifies every taken, installed or restored snapshot against the
committed prefix, and every safety property after every event, throughout.
"""

from __future__ import annotations

from raftkv.raft.types import NodeId
from raftkv.sim.cluster import Cluster
from raftkv.sim.network import LinkFaults
from tests.sim.harness import applied_data, make_cluster, one, wait_one_leader


def snapshotting(n: int = 3, seed: int = 1, every: int = 20, trailing: int = 5, **kw: object) -> Cluster:
    return make_cluster(n, seed, snapshot_every=every, snapshot_trailing=trailing, **kw)


def log_len(c: Cluster, i: NodeId) -> int:
    disk = c.nodes[i].disk
    return int(disk.last_index() - disk.first_index() + 1)


def test_snapshot_basic_log_stays_bounded() -> None:
    c = snapshotting(every=20, trailing=5)
    for k in range(300):
        one(c, f"v{k}".encode(), 3)
    for i in c.ids:
        assert c.nodes[i].snapshot is not None
        assert log_len(c, i) <= 20 + 5 + 2, f"node {i} holds {log_len(c, i)} entries"
        assert applied_data(c, i) == [f"v{k}".encode() for k in range(300)]
    assert c.snapshots_taken >= 3 * 14


def test_install_to_a_disconnected_follower() -> None:
    c = snapshotting(every=20, trailing=5)
    leader = wait_one_leader(c)
    lagging = next(i for i in c.ids if i != leader)
    c.disconnect(lagging)
    for k in range(150):
        one(c, f"v{k}".encode(), 2)
    assert c.snapshots_installed == 0
    c.connect(lagging)
    one(c, b"after", 3)
    assert c.snapshots_installed >= 1, "the follower was behind the leader's log: it needed the snapshot"
    assert applied_data(c, lagging)[-3:] == [b"v148", b"v149", b"after"]
    assert c.nodes[lagging].snapshot is not None


def test_install_on_an_unreliable_network() -> None:
    c = snapshotting(5, seed=4, every=15, trailing=0)
    leader = wait_one_leader(c)
    lagging = [i for i in c.ids if i != leader][:2]
    for i in lagging:
        c.disconnect(i)
    for k in range(100):
        one(c, f"v{k}".encode(), 3)
    c.set_faults(LinkFaults(drop_rate=0.2, dup_rate=0.1, min_delay_ms=0, max_delay_ms=30))
    for i in lagging:
        c.connect(i)
    c.run_for(3000)
    c.set_faults(LinkFaults(0.0, 0.0, 1, 5, fifo=True))
    one(c, b"end", 5, timeout_ms=20_000)
    assert c.snapshots_installed >= 2
    for i in c.ids:
        assert applied_data(c, i)[-1] == b"end"


def test_install_with_crashes_during_and_after_install() -> None:
    c = snapshotting(3, seed=7, every=10, trailing=0, disk_latency_ms=(2, 5))
    leader = wait_one_leader(c)
    lagging = next(i for i in c.ids if i != leader)
    c.crash(lagging)
    for k in range(80):
        one(c, f"v{k}".encode(), 2)
    installs_before = c.snapshots_installed
    for attempt in range(6):
        c.restart(lagging)
        # Kill it again a few ms later: sometimes before, sometimes in the middle of, sometimes after the install.
        c.run_for(5 + 7 * attempt)
        c.crash(lagging)
    c.restart(lagging)
    one(c, b"end", 3, timeout_ms=20_000)
    assert c.snapshots_installed > installs_before
    assert applied_data(c, lagging)[-1] == b"end"


def test_all_crash_and_restart_from_snapshot_plus_log_tail() -> None:
    c = snapshotting(3, seed=9, every=25, trailing=3)
    for k in range(130):
        one(c, f"v{k}".encode(), 3)
    before = {i: c.nodes[i].applied_index for i in c.ids}
    snaps = {i: c.nodes[i].snapshot for i in c.ids}
    for i in c.ids:
        c.crash(i)
    for i in c.ids:
        c.restart(i)
        node = c.nodes[i]
        snap = snaps[i]
        assert snap is not None
        # Restored from its own snapshot, then the committed log tail it holds is replayed at once: the applied
        # index never goes back past the snapshot, and not past what it had applied if the commit was durable.
        assert snap[0].index <= node.applied_index <= before[i]
    one(c, b"end", 3)
    for i in c.ids:
        assert c.nodes[i].applied_index > before[i]
        assert applied_data(c, i) == [*(f"v{k}".encode() for k in range(130)), b"end"]


def test_snapshot_is_kept_and_served_after_a_restart() -> None:
    """A restarted leader still has its snapshot on disk and can send it to a follower that needs it."""
    c = snapshotting(3, seed=11, every=20, trailing=0)
    leader = wait_one_leader(c)
    lagging = next(i for i in c.ids if i != leader)
    c.disconnect(lagging)
    for k in range(100):
        one(c, f"v{k}".encode(), 2)
    for i in c.ids:
        if i != lagging:
            c.restart(i)
    assert all(c.nodes[i].snapshot is not None for i in c.ids if i != lagging)
    c.connect(lagging)
    one(c, b"end", 3, timeout_ms=20_000)
    assert c.snapshots_installed >= 1
    assert applied_data(c, lagging)[-1] == b"end"


def test_a_wiped_follower_is_noticed_and_brought_back_by_a_snapshot() -> None:
    """The follower's data is gone: its heartbeat replies say its log ends before the commit index it was sent,
    the leader lowers its match and probes, and — the entries being compacted — sends the snapshot."""
    c = snapshotting(3, seed=12, every=20, trailing=5)
    for k in range(100):
        one(c, f"v{k}".encode(), 3)
    leader = wait_one_leader(c)
    follower = next(i for i in c.ids if i != leader)
    c.wipe(follower)
    installs = c.snapshots_installed
    one(c, b"after", 3, timeout_ms=10_000)
    assert c.snapshots_installed > installs
    assert applied_data(c, follower) == [*(f"v{k}".encode() for k in range(100)), b"after"]


def test_a_wiped_follower_without_snapshots_gets_the_whole_log_again() -> None:
    c = make_cluster(3, seed=13)
    for k in range(30):
        one(c, f"v{k}".encode(), 3)
    leader = wait_one_leader(c)
    follower = next(i for i in c.ids if i != leader)
    c.wipe(follower)
    one(c, b"after", 3, timeout_ms=10_000)
    assert applied_data(c, follower) == [*(f"v{k}".encode() for k in range(30)), b"after"]
