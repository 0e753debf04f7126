"""The README's main job and the embedding example keep working."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_a_cluster_fails_over_and_loses_nothing() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "raftkv.demo", "--commands", "30"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing lost" in r.stdout
    assert "caught up" in r.stdout
    # 30 puts take raftkv's store from revision 0 to 30: etcd's numbering (from 1) says 31.
    assert "etcd v3 gateway: demo/0007 = 'value-7' at etcd revision 31" in " ".join(r.stdout.split()), r.stdout
    resumed_ms = int(re.search(r"writes resumed (\d+) ms after the kill", r.stdout).group(1))  # type: ignore[union-attr]
    assert resumed_ms < 5000


def test_counter_example_agrees_after_a_leader_handover() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "counter.py")], check=False, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "add 4 -> 10" in r.stdout
    assert "add 10 -> 20" in r.stdout
    counters = re.search(r"counters: \{(\d+): (\d+), (\d+): (\d+)\}", r.stdout)
    assert counters is not None and counters.group(2) == counters.group(4) == "20"
