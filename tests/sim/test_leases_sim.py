"""Leases in the simulator (raftkv.sim.leases): drifting node clocks, keep-alives through whichever node believes
it leads, and the checker that holds expiry to the guarantee. The checker must bite: a lessor that acknowledges
keep-alives without moving the deadline is caught within a bounded number of seeds."""

from __future__ import annotations

import pytest

from raftkv.kv.lessor import Lessor
from raftkv.sim.run import SimOptions, run_seed

SEEDS = range(1, 200)


def _lease_seeds() -> list[int]:
    return [s for s in SEEDS if (o := SimOptions.draw(s)).lease_every_ms and o.kv_workload and o.check_quorum]


def test_lease_seeds_expire_leases_and_never_early() -> None:
    seeds = _lease_seeds()[:12]
    assert len(seeds) >= 8
    expired = 0
    for seed in seeds:
        result = run_seed(seed, SimOptions.draw(seed))
        assert result.ok, f"seed {seed}: {result.failure}"
        expired += result.stats["leases_expired"]
    assert expired > 0, "some leases lapse and expire in these runs: the expiry path is exercised"


def test_a_keep_alive_that_does_not_move_the_deadline_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def ignored(self: Lessor, lease: int, now_s: float) -> int | None:  # acknowledged, deadline not moved
        ttl = self._ttls.get(lease) if self.leading else None  # the mutation reaches inside
        return ttl

    monkeypatch.setattr(Lessor, "keep_alive", ignored)
    for seed in _lease_seeds():
        result = run_seed(seed, SimOptions.draw(seed))
        if not result.ok:
            assert "expired" in result.failure and "after the last keep-alive" in result.failure
            return
    pytest.fail(f"no seed of {SEEDS} caught a lessor that ignores keep-alives")


def test_a_keep_alive_that_grants_more_than_the_ttl_is_caught_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side of the guarantee: a lessor that holds a lease three TTLs past its last keep-alive expires
    it late, which the liveness phase reports."""
    honest = Lessor.keep_alive

    def generous(self: Lessor, lease: int, now_s: float) -> int | None:
        ttl = honest(self, lease, now_s)
        if ttl is not None:
            self._deadlines[lease] = now_s + 3 * ttl  # the mutation reaches inside
        return ttl

    monkeypatch.setattr(Lessor, "keep_alive", generous)
    for seed in _lease_seeds():
        result = run_seed(seed, SimOptions.draw(seed))
        if not result.ok:
            assert result.phase == "liveness" and "past the latest its TTL allows" in str(result.failure)
            return
    pytest.fail(f"no seed of {SEEDS} caught a lessor that holds leases past their TTL")


def test_a_leader_that_never_expires_leases_fails_the_liveness_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Lessor, "expired", lambda self, now_s: [])
    seed = _lease_seeds()[0]
    result = run_seed(seed, SimOptions.draw(seed))
    assert not result.ok and result.phase == "liveness", result.failure
    assert "still there" in str(result.failure)
