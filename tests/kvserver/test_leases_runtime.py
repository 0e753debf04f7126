"""Leases on running nodes: expiry by the leader, keep-alive, the guarantee's two sides, failover."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from raftkv.client import LeaseNotFound, connect
from raftkv.kv.lessor import Lessor
from tests.runtime.cluster import kv_servers, leader_of, wait_until


def test_the_lessor_never_expires_early_and_a_new_leader_extends_every_lease() -> None:
    lessor = Lessor()
    lessor.promote(100.0, {1: 10, 2: 5}, extend_s=3.0)
    assert lessor.remaining(1, 100.0) == 13.0 and lessor.remaining(2, 100.0) == 8.0
    assert lessor.expired(107.9) == [] and lessor.expired(108.0) == [2]
    assert lessor.keep_alive(1, 105.0) == 10 and lessor.remaining(1, 105.0) == 10.0, "never shortened below TTL"
    assert lessor.keep_alive(1, 104.0) == 10 and lessor.remaining(1, 105.0) == 10.0, "nor by a stale keep-alive"
    assert lessor.keep_alive(2, 108.0) is None, "expired: its revoke is due, a keep-alive cannot save it"
    lessor.sync(106.0, {1: 10, 3: 2})  # lease 2 revoked, 3 granted
    assert lessor.remaining(2, 106.0) is None and lessor.remaining(3, 106.0) == 2.0
    lessor.demote()
    assert lessor.keep_alive(1, 106.0) is None and lessor.expired(1e9) == [], "a follower keeps no timers"


async def test_a_lease_expires_after_its_ttl_without_keep_alive_and_its_keys_go(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test") as c:
            granted = await c.lease_grant(1)
            await c.put("svc/a", "1", lease=granted.id)
            start = time.monotonic()
            assert (await c.get("svc/a")).lease == granted.id  # type: ignore[union-attr]
            ttl = await c.lease_time_to_live(granted.id, keys=True)
            assert ttl.granted_ttl_s == 1 and ttl.keys == (b"svc/a",) and 0 <= ttl.ttl_s <= 1
            await wait_until(lambda: all(s.kv is not None and not s.kv.lease_ttls for s in servers), 5.0, "expiry")
            took = time.monotonic() - start
            assert took >= 1.0, f"expired after {took:.2f} s: before its TTL"
            assert await c.get("svc/a") is None
            with pytest.raises(LeaseNotFound):
                await c.lease_keep_alive_once(granted.id)
            with pytest.raises(LeaseNotFound):
                await c.put("svc/b", "1", lease=granted.id)
    finally:
        for s in servers:
            await s.aclose()


async def test_a_kept_alive_lease_outlives_its_ttl_and_survives_a_leader_change(tmp_path: Path) -> None:
    servers = await kv_servers(tmp_path, 3)
    try:
        async with connect([str(s.config.listen_client) for s in servers], cluster_id="test", timeout=5.0) as c:
            async with c.lease(1) as lease:
                await c.put("lock", "me", lease=lease.id)
                await asyncio.sleep(1.5)  # past the TTL: the background keep-alive holds it
                assert await c.get("lock") is not None
                old = leader_of(servers)
                assert old is not None
                await old.aclose()  # a failover while the lease is kept alive
                rest = [s for s in servers if s is not old]
                await wait_until(lambda: leader_of(rest) is not None, 5.0, "a new leader")
                await asyncio.sleep(1.5)
                assert not lease.lost.is_set()
                assert (await c.get("lock")).value == b"me"  # type: ignore[union-attr]
                assert lease.id in await c.leases()
            # Leaving the block revokes it: its key goes at once.
            assert await c.get("lock") is None
            assert lease.id not in await c.leases()
    finally:
        for s in servers:
            await s.aclose()


async def test_a_revocation_that_does_not_commit_is_not_an_unretrieved_exception() -> None:
    """Found by torture --peer-tls (seed 211): a leader that lost office with expiry revocations in flight
    logged "Future exception was never retrieved" for each (ProposalDropped), as nobody awaits them."""
    import gc
    from types import SimpleNamespace

    from raftkv.errors import ProposalDropped
    from raftkv.kvserver.leases import LeaseKeeper

    loop = asyncio.get_running_loop()
    futs: list[asyncio.Future[object]] = []

    def submit_batch(datas: list[bytes], timeout: float | None = None) -> tuple[int, int, list[asyncio.Future[object]]]:
        futs[:] = [loop.create_future() for _ in datas]
        return 7680, 6, list(futs)

    cfg = SimpleNamespace(election_ticks=15, tick_ms=10)
    node = SimpleNamespace(id=3, config=cfg, submit_batch=submit_batch)
    keeper = LeaseKeeper(node, SimpleNamespace())  # type: ignore[arg-type]
    unretrieved: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        assert keeper.propose_revoke(42)
        futs[0].set_exception(ProposalDropped("index 7680 was taken by another leader's entry (term 7, not 6)"))
        futs.clear()
        await asyncio.sleep(0)  # the done callback runs
        gc.collect()
        assert unretrieved == []
    finally:
        loop.set_exception_handler(None)
