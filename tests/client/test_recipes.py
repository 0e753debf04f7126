"""The lock and election recipes on a running 3-node cluster (in process)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from raftkv.client import LockLost, connect, connect_sync
from tests.runtime.cluster import kv_servers


async def test_the_lock_excludes_and_hands_over_in_queue_order_with_increasing_tokens(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test") as c:
            holding: list[int] = []
            order: list[tuple[int, int]] = []  # (worker, token) in the order they held the lock

            async def worker(n: int) -> None:
                async with c.lock("jobs/nightly", ttl=5) as held:
                    assert not holding, f"worker {n} entered while {holding} held the lock"
                    holding.append(n)
                    order.append((n, held.token))
                    await asyncio.sleep(0.02)
                    held.check()
                    holding.remove(n)

            await asyncio.gather(*(worker(n) for n in range(6)))
            tokens = [t for _n, t in order]
            assert len(order) == 6 and tokens == sorted(tokens) and len(set(tokens)) == 6
            assert (await c.range("jobs/nightly/", prefix=True)).count == 0, "every key released"
    finally:
        for s in servers:
            await s.aclose()


async def test_a_holder_whose_lease_is_lost_learns_it_and_the_next_waiter_gets_the_lock(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test") as c:
            first = c.lock("L", ttl=1)
            await first.acquire()
            second = c.lock("L", ttl=5)
            waiting = asyncio.ensure_future(second.acquire())
            await asyncio.sleep(0.2)
            assert not waiting.done(), "the lock is held"
            lease_id = int(first.key.rsplit(b"/", 1)[1])
            await c.lease_revoke(lease_id)  # as if the holder had been cut off past its TTL
            await asyncio.wait_for(waiting, 5.0)
            assert second.token > first.token
            await asyncio.wait_for(first.lost.wait(), 5.0)  # its keep-alive finds the lease gone
            await second.release()
            await first.release()  # releasing a lost lock is harmless
    finally:
        for s in servers:
            await s.aclose()


async def test_a_waiter_whose_predecessor_leaves_the_middle_of_the_queue_waits_on(tmp_path: Path) -> None:
    """A waiter that sees the key just ahead of it deleted while another key is still ahead must not take the
    lock (the recipe skips its re-check only when the key it watched was the only one ahead)."""
    servers = await kv_servers(tmp_path, 3)
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test") as c:
            holder, middle, last = c.lock("Q", ttl=5), c.lock("Q", ttl=5), c.lock("Q", ttl=5)
            await holder.acquire()
            middle_waits = asyncio.ensure_future(middle.acquire())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while (await c.range("Q/", prefix=True)).count < 2:
                assert loop.time() < deadline, "the middle waiter never queued"
                await asyncio.sleep(0.01)
            last_waits = asyncio.ensure_future(last.acquire())
            while (await c.range("Q/", prefix=True)).count < 3:
                assert loop.time() < deadline, "the last waiter never queued"
                await asyncio.sleep(0.01)
            keys = (await c.range("Q/", prefix=True, sort_target="create")).kvs
            await c.lease_revoke(keys[1].lease)  # the middle one leaves: the last one's watched key goes
            with pytest.raises(LockLost):  # its next keep-alive finds the lease gone
                await asyncio.wait_for(middle_waits, 5.0)
            assert not last_waits.done(), "the last waiter took the lock while its holder still held it"
            await holder.release()
            await asyncio.wait_for(last_waits, 5.0)
            assert last.token > holder.token
            await last.release()
            await middle.release()
    finally:
        for s in servers:
            await s.aclose()


async def test_an_election_campaign_proclaim_resign_observe(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test") as c:
            a, b = c.election("svc/leader"), c.election("svc/leader")
            seen: list[bytes] = []

            async def watch() -> None:
                async for value in c.election("svc/leader").observe():
                    seen.append(value)
                    if value == b"b-1":
                        return

            observer = asyncio.ensure_future(watch())
            await a.campaign("a-1")
            contender = asyncio.ensure_future(b.campaign("b-1"))
            await asyncio.sleep(0.2)
            assert not contender.done() and (await a.leader()).value == b"a-1"  # type: ignore[union-attr]
            await a.proclaim("a-2")
            await a.resign()
            await asyncio.wait_for(contender, 5.0)
            assert (await b.leader()).value == b"b-1"  # type: ignore[union-attr]
            await asyncio.wait_for(observer, 5.0)
            assert seen == [b"a-1", b"a-2", b"b-1"]
            await b.resign()
            assert await b.leader() is None
    finally:
        for s in servers:
            await s.aclose()


async def test_the_blocking_lock_election_and_lease(tmp_path: Path) -> None:
    """The same recipes through ``connect_sync``: the lock excludes and hands over with a higher token, its lease
    lost makes ``check`` raise, an election is won, proclaimed and observed; all from plain threads."""
    servers = await kv_servers(tmp_path, 3)
    try:
        endpoints = [str(s.config.listen_client) for s in servers]

        def locks() -> tuple[int, int, bool]:
            with connect_sync(endpoints, cluster_id="test") as c:
                first = c.lock("sync/jobs", ttl=5)
                first.acquire()
                second = c.lock("sync/jobs", ttl=5)
                with pytest.raises(TimeoutError):
                    second.acquire(timeout=0.5)  # held by the first
                first.release()
                with c.lock("sync/jobs", ttl=1) as held:
                    token = held.token
                    lease_id = int(held.key.rsplit(b"/", 1)[1])
                    c.lease_revoke(lease_id)  # as if it had expired while the holder was cut off
                    deadline = time.monotonic() + 5.0
                    while not held.is_lost():
                        assert time.monotonic() < deadline, "the lost lease was never noticed"
                        time.sleep(0.05)
                    with pytest.raises(LockLost):
                        held.check()
                return first.token, token, c.range("sync/jobs/", prefix=True).count == 0

        first_token, later_token, released = await asyncio.to_thread(locks)
        assert later_token > first_token and released

        def elect() -> tuple[bytes | None, list[bytes], int]:
            with connect_sync(endpoints, cluster_id="test") as c, c.lease(5) as lease:
                e = c.election("sync/leader")
                e.campaign("node-a")
                e.proclaim("node-a v2")
                leader = e.leader()
                seen = []
                for value in c.election("sync/leader").observe():
                    seen.append(value)
                    break  # the current leader's value first
                e.resign()
                return (leader.value if leader else None), seen, lease.id

        value, seen, lease_id = await asyncio.to_thread(elect)
        assert value == b"node-a v2" and seen == [b"node-a v2"] and lease_id > 0
    finally:
        for s in servers:
            await s.aclose()
