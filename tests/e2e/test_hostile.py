"""Hostile input against a real cluster (issue 17): every attack of tests/e2e/hostile.py is refused, the node
that took it keeps serving, and its memory stays bounded. Timing is bench/hostile.py's business, not a test's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv.client import connect, connect_sync
from tests.e2e import hostile
from tests.e2e.harness import ProcCluster

pytestmark = pytest.mark.e2e


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):  # the heap: the LMDB file's cached pages are the data written
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon")


async def test_every_hostile_input_is_refused_and_the_node_serves_on(tmp_path: Path) -> None:
    c = ProcCluster(tmp_path, 3, extra_args=["--max-connections", "500", "--max-watch-pending-bytes", "1048576"])
    await c.start()
    try:
        lead = await c.wait_leader(timeout=15.0)
        target = c.endpoint(lead)
        before = rss_mib(c.procs[lead].pid)
        seen: list[str] = []
        async with connect(c.endpoints(), cluster_id=c.cluster_id) as client:
            for name, attack in hostile.ATTACKS.items():
                outcome = await asyncio.to_thread(attack, target)
                seen.append(f"{name}: {outcome}")
                r = await client.put("after", name)  # the node serves on, and so does the cluster
                kv = await client.get("after")
                assert kv is not None and kv.value == name.encode() and r.revision > 0, name

            def write() -> None:
                with connect_sync(c.endpoints(), cluster_id=c.cluster_id) as sync:
                    for _ in range(12):  # 1.2 MB of values: over the 1 MiB a stalled watcher may hold
                        sync.put("big", b"x" * 100_000)

            outcome = await asyncio.to_thread(hostile.stalled_watcher, target, write)
            assert "--max-watch-pending-bytes" in outcome, outcome
            seen.append(outcome)
            await client.put("after", "all")
        after = rss_mib(c.procs[lead].pid)
        # Bounded: the 50 MB value was never decoded, 2,000 connections and a stalled watcher's buffer are gone.
        assert after < before + 120, f"the leader grew from {before:.0f} to {after:.0f} MiB: {seen}"
        assert "closed by the node" in " ".join(seen)
    finally:
        await c.close()
