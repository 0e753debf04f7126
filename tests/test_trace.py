"""raftkv.trace (stage timestamps) and bench/trace_put.py's matching of one put across four processes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from raftkv import trace

BENCH = Path(__file__).parents[1] / "bench" / "trace_put.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trace_put", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_points_go_to_this_processs_file_only_when_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "ON", False)
    monkeypatch.setattr(trace, "_dir", None)
    assert not trace.ON
    trace.enable(str(tmp_path / "t"))
    assert trace.ON
    trace.point("n.commit", 7)
    trace.flush()
    (only,) = (tmp_path / "t").glob("*.trace")
    _t, stage, key = only.read_text().split()
    assert (stage, key) == ("n.commit", "7")


def test_the_breakdown_matches_a_put_by_time_and_index_and_picks_the_first_acknowledging_follower() -> None:
    b = _bench()
    ms = 1_000_000
    client = {"c.send": [(0, 1)], "c.recv": [(20 * ms, 1)]}
    leader = {
        "s.exec": [(1 * ms, 1)],
        "s.prop": [(2 * ms, 42)],
        "n.ae.out": [(3 * ms, 41), (3 * ms + 1, 42)],  # an older append first: matched by index, not time alone
        "n.ack.in": [(10 * ms, 42)],
        "n.commit": [(11 * ms, 42)],
        "n.applied": [(12 * ms, 42)],
        "n.synced": [(9 * ms, 42)],
        "s.done": [(13 * ms, 1)],
    }
    fast = {
        "n.ae.in": [(4 * ms, 42)],
        "n.ready": [(4 * ms + 500, 42)],
        "n.written": [(5 * ms, 42)],
        "n.synced": [(6 * ms, 42)],
        "n.ack.out": [(7 * ms, 42)],
    }
    slow = {
        "n.ae.in": [(5 * ms, 42)],
        "n.ready": [(5 * ms + 500, 42)],
        "n.written": [(6 * ms, 42)],
        "n.synced": [(8 * ms, 42)],
        "n.ack.out": [(9 * ms, 42)],
    }
    (row,) = b.breakdown(client, {1: leader, 2: slow, 3: fast})
    assert row["client -> leader"] == 1.0 and row["propose"] == 1.0
    assert row["leader -> follower"] == pytest.approx(1.0, abs=1e-5)  # the fast follower: 3 -> 4 ms
    assert row["follower wakes"] == pytest.approx(0.0005) and row["follower write"] == pytest.approx(0.9995)
    assert row["follower fsync"] == 1.0 and row["follower -> leader"] == 3.0
    assert row["leader -> client"] == 7.0 and row["total"] == 20.0
    assert row["leader's own write + fsync (beside 4-9)"] == 7.0
