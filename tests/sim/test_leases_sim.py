"""Leases in the simulator (raftkv.sim.leases): drifting node clocks, keep-alives through whichever node believes
it leads, and the checker that holds expiry to the guarantee. The checker must bite: a lessor that acknowledges
keep-alives without moving the deadline is caught within a bounded number of seeds."""

from __future__ import annotations

import pytest

from raftkv.kv.commands import LeaseGrant, Put, encode_command
from raftkv.kv.lessor import Lessor
from raftkv.raft.ready import Role
from raftkv.sim.checker import SafetyViolation
from raftkv.sim.leases import CHECK_MS, TTL_S, LeaseWorkload, _LeaseState
from raftkv.sim.run import SimOptions, run_seed
from tests.sim.harness import make_cluster, wait_one_leader

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


def _deposed_leader_ack(seed: int, extend: bool) -> tuple[bool, int]:
    """The window the new leader's extension exists for: the leader is cut off from the other nodes (not from
    the lease's client), the others elect a new leader, and the old one, not yet stepped down by check-quorum,
    acknowledges one more keep-alive after that. Returns (the checker raised an early expiry, how long after
    the new leader took office that last acknowledgement came, in ms)."""
    c = make_cluster(3, seed=seed, kv=True)
    wl = LeaseWorkload(c, seed, every_ms=50, election_ticks=15, tick_ms=c.settings.tick_ms)
    wl.rates = dict.fromkeys(c.ids, 1.0)  # no drift, and the checker holds expiry to the TTL exactly
    wl.drift = 0.0
    if not extend:
        wl.extend_s = 0.0
    c.schedule(CHECK_MS, wl.check)
    old = wait_one_leader(c)
    c.propose(encode_command(LeaseGrant(TTL_S, id=1)), via=old)
    c.propose(encode_command(Put(b"lease/1", b"held", lease=1)), via=old)
    assert c.run_until(lambda: all(1 in (c.nodes[i].kv.lease_ttls or {}) for i in c.ids), 2000)  # type: ignore[union-attr]
    state = _LeaseState(1, keep_alive_until_ms=0, last_ack_ms=c.now)
    wl.leases[1] = state
    c.run_for(100)  # the old leader's lessor holds it
    others = [i for i in c.ids if i != old]
    c.partition([[old], others])
    try:
        while c.core(old).role is Role.LEADER:
            if wl.lessors[old].keep_alive(1, wl._local_s(old)) is not None:
                state.last_ack_ms = c.now
            c.run_for(5)
        new = wait_one_leader(c, among=others)
        c.connect_all()
        window = state.last_ack_ms - wl.promoted_ms.get(new, c.now)
        c.run_until(lambda: state.gone_ms is not None, 5000)
    except SafetyViolation as e:
        assert "expired" in str(e) and "after the last keep-alive" in str(e)
        return True, state.last_ack_ms - max(wl.promoted_ms.values())
    assert state.gone_ms is not None, "the lapsed lease was revoked"
    return False, window


def test_the_new_leaders_extension_covers_a_deposed_leaders_last_acknowledgement() -> None:
    """Both sides: with the extension no seed expires the lease early; without it, a seed whose deposed leader
    acknowledged well after the new leader took office expires it early, and the checker says so."""
    caught = []
    for seed in range(1, 30):
        early, _window = _deposed_leader_ack(seed, extend=True)
        assert not early, f"seed {seed}: the lease expired early despite the extension"
        early, window = _deposed_leader_ack(seed, extend=False)
        if early:
            caught.append((seed, window))
    assert caught, "no seed opened the window: the scenario does not exercise the extension"
