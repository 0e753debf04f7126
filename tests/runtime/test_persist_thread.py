"""Where a node's WAL writes run: a leader's and a follower's on the loop thread, one queued behind a compaction
in the WAL thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from raftkv.runtime.node import RaftNode
from tests.runtime.cluster import configs, start_all, start_and_elect, wait_until


async def test_the_leader_and_the_followers_write_on_the_loop_thread(tmp_path: Path) -> None:
    nodes = start_all(configs(tmp_path, 3))
    threads: dict[int, set[str]] = {n.id: set() for n in nodes}
    for n in nodes:
        original = n._persist

        def recording(*args: Any, _n: RaftNode = n, _original: Any = original) -> None:
            threads[_n.id].add(threading.current_thread().name)
            _original(*args)

        n._persist = recording  # type: ignore[method-assign]
    lead = await start_and_elect(nodes)
    try:
        for n in nodes:
            threads[n.id].clear()  # forget the election's writes (candidates use the WAL thread)
        await asyncio.gather(*(lead.propose(f"c{k}".encode()) for k in range(20)))
        followers = [n for n in nodes if n is not lead]
        await wait_until(lambda: all(threads[f.id] for f in followers), 2.0, "the followers wrote")
        loop_thread = threading.current_thread().name
        assert all(threads[f.id] == {loop_thread} for f in followers), threads
        assert threads[lead.id] == {loop_thread}, threads
        # While a compaction is queued in the WAL thread, a follower's write queues behind it there.
        f = followers[0]
        f._wal_jobs += 1
        threads[f.id].clear()
        try:
            await lead.propose(b"during compaction")
            await wait_until(lambda: bool(threads[f.id]), 2.0, "the follower wrote")
            assert all(t.startswith(f"raftkv-wal-{f.id}") for t in threads[f.id]), threads
        finally:
            f._wal_jobs -= 1
    finally:
        for n in nodes:
            await n.aclose(transfer_leadership=False)
