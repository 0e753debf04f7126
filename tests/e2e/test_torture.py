"""The torture harness's CI slice: short runs under every fault kind, and proof that it catches a planted bug.

The long runs are ``make torture`` (``python -m tests.e2e.torture``); ``docs/torture.md`` lists them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.check import Kind, Operation, cas, delete, put
from tests.e2e.torture import FAULT_KINDS, lost_writes, run_torture, schedule

# --- the run's own checks, on hand-made histories (no processes) ----------------------------------------------


def test_a_final_value_overtaken_by_an_acknowledged_write_is_a_lost_write() -> None:
    history = [put(1, "k", "a", 0, 1), put(2, "k", "b", 2, 3)]
    assert lost_writes(history, {"k": "b"}) == []
    assert lost_writes(history, {"k": "a"}) == [
        "lost: key 'k' ends 'a', but the acknowledged put 'k' 'b' [2.000, 3.000] came after every write that "
        "could explain it"
    ]
    assert lost_writes(history, {})[0].startswith("lost: key 'k' ends absent")
    assert lost_writes(history, {"k": "z"}) == ["lost: key 'k' ends with 'z', which no operation wrote"]


def test_writes_of_unknown_outcome_and_failed_cas_explain_nothing_more_than_they_may() -> None:
    pending = [put(1, "k", "a", 0, 1), Operation(2, "put", "k", 2.0, None, value="b")]
    assert lost_writes(pending, {"k": "a"}) == []  # the pending put may never have happened
    assert lost_writes(pending, {"k": "b"}) == []  # or happened
    deleted = [put(1, "k", "a", 0, 1), delete(2, "k", 2, 3)]
    assert lost_writes(deleted, {}) == []
    assert lost_writes(deleted, {"k": "a"})[0].startswith("lost: key 'k' ends 'a', but the acknowledged delete")
    failed_cas = [put(1, "k", "a", 0, 1), cas(2, "k", "x", "b", False, 2, 3)]
    assert lost_writes(failed_cas, {"k": "a"}) == []
    assert lost_writes(failed_cas, {"k": "b"}) == ["lost: key 'k' ends with 'b', which no operation wrote"]
    concurrent = [put(1, "k", "a", 0, 5), put(2, "k", "b", 1, 3)]
    assert lost_writes(concurrent, {"k": "a"}) == lost_writes(concurrent, {"k": "b"}) == []


def test_the_fault_schedule_depends_on_the_seed_alone() -> None:
    assert schedule(7, FAULT_KINDS, 5, 30) == schedule(7, FAULT_KINDS, 5, 30)
    assert schedule(7, FAULT_KINDS, 5, 30) != schedule(8, FAULT_KINDS, 5, 30)
    kinds = {spec.kind for spec in schedule(7, FAULT_KINDS, 5, 200)}
    assert kinds == set(FAULT_KINDS)


# --- real clusters --------------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(("seed", "nodes"), [(1, 3), (2, 5)])
async def test_every_fault_kind_leaves_a_linearizable_history_and_loses_nothing(
    tmp_path: Path, seed: int, nodes: int
) -> None:
    res = await run_torture(seed, 20.0, nodes, faults="all", out_dir=tmp_path)
    assert res.ok, res.summary()
    assert res.check is not None and res.check.kind is Kind.OK
    assert res.ops >= 200, res.summary()
    assert sum(res.faults_injected.values()) >= 4, res.summary()
    assert (tmp_path / "history.jsonl").exists()


@pytest.mark.e2e
async def test_stale_reads_on_followers_are_caught(tmp_path: Path) -> None:
    """The planted bug (RAFTKV_TEST_UNSAFE_STALE_READS=1: followers answer reads from their own state): partitions
    leave followers behind while the majority writes on, and reads pinned to them return old values."""
    res = await run_torture(3, 15.0, 3, faults=("partition",), unsafe_stale_reads=True, out_dir=tmp_path)
    assert res.check is not None and res.check.kind is Kind.ILLEGAL, res.summary()
    assert not res.ok and res.verdict == "illegal"
    assert res.html_path is not None and res.html_path.exists()
