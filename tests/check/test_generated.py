"""Generated histories: legal ones from a reference store must pass; buggy stores' anomalies must be flagged.

Two judges keep the checker honest. ``certify_illegal`` is a simple sufficient condition for illegality: every
history it certifies must be flagged, on the certified key. ``reference_linearizable`` is an exact but slow
memoized search written independently: on histories small enough for it, the verdicts must agree exactly,
flagged or not — so an anomaly the checker lets pass is one that really left no trace.
"""

from __future__ import annotations

import pytest

from raftkv.check import Kind, check
from raftkv.check.gen import ANOMALIES, Anomaly, generate
from raftkv.check.history import Operation
from tests.check.certify import certify_illegal
from tests.check.naive import _apply, reference_linearizable

SEEDS = range(40)


def _assert_prefix_is_a_linearizable_prefix(history: list[Operation], key: str, prefix: list[int]) -> None:
    """The prefix replays on a plain dict, respects real time, and holds every operation that must precede it."""
    store: dict[str, object] = {}
    latest_call = float("-inf")
    for i in prefix:
        op = history[i]
        assert op.key == key
        assert _apply(store, op), f"#{i} is illegal where the prefix places it"  # type: ignore[arg-type]
        assert op.effective_return_s >= latest_call, f"#{i} is placed after an operation called after it returned"
        latest_call = max(latest_call, op.call_s)
    placed = set(prefix)
    for i, op in enumerate(history):
        if op.key == key and i not in placed:
            assert op.effective_return_s >= latest_call, f"#{i} returned before a placed operation was called"


@pytest.mark.parametrize(
    ("clients", "keys", "pending_rate"),
    [(3, 1, 0.0), (8, 1, 0.0), (5, 2, 0.1), (8, 3, 0.3), (10, 16, 0.05)],
)
def test_legal_random_histories_pass(clients: int, keys: int, pending_rate: float) -> None:
    for seed in range(15):
        g = generate(seed, ops=400, clients=clients, keys=keys, pending_rate=pending_rate)
        r = check(g.history, timeout_s=20)
        assert r.kind is Kind.OK, f"seed {seed}: {r.reason}"
        assert certify_illegal(g.history) is None  # and the certificate is sound on them


@pytest.mark.parametrize("anomaly", ANOMALIES)
def test_every_certified_anomaly_is_flagged(anomaly: Anomaly) -> None:
    flagged = certified = 0
    for seed in SEEDS:
        for pending_rate in (0.0, 0.1):
            g = generate(seed, ops=200, clients=5, keys=2, pending_rate=pending_rate, anomaly=anomaly)
            assert g.site is not None
            witness = certify_illegal(g.history)
            r = check(g.history, timeout_s=20)
            flagged += r.kind is Kind.ILLEGAL
            if witness is None:
                continue
            certified += 1
            assert r.kind is Kind.ILLEGAL, f"seed {seed}: {witness} but: {r.reason}"
            assert witness.key in r.illegal_keys
            assert r.key is not None and f"key {r.key!r}" in r.reason
            part = r.partitions[r.key]
            assert part.unplaceable and part.unplaceable[0] not in part.order
            _assert_prefix_is_a_linearizable_prefix(g.history, r.key, list(part.order))
    # The injected bugs are visible often enough for the test to mean something (exact counts are deterministic).
    assert certified >= 10, certified
    assert flagged >= certified


@pytest.mark.parametrize("anomaly", [None, *ANOMALIES])
def test_verdicts_agree_with_the_reference_search(anomaly: Anomaly | None) -> None:
    illegal = 0
    for seed in SEEDS:
        g = generate(seed, ops=150, clients=5, keys=2, pending_rate=0.03, anomaly=anomaly)
        r = check(g.history, timeout_s=20)
        expected = reference_linearizable(g.history)
        assert (r.kind is Kind.OK) == expected, f"seed {seed}: checker {r.kind}, reference {expected}: {r.reason}"
        illegal += not expected
    assert (illegal == 0) == (anomaly is None), illegal


@pytest.mark.parametrize("anomaly", ANOMALIES)
def test_anomalies_are_flagged_in_a_large_history(anomaly: Anomaly) -> None:
    """The benchmark's shape (10 clients, 16 keys), 3,000 operations: a single bad read among them is found."""
    found = 0
    for seed in range(6):
        g = generate(seed, ops=3000, clients=10, keys=16, pending_rate=0.02, anomaly=anomaly)
        witness = certify_illegal(g.history)
        if witness is None:
            continue
        r = check(g.history, timeout_s=20)
        assert r.kind is Kind.ILLEGAL and witness.key in r.illegal_keys, f"seed {seed}: {witness}; {r.reason}"
        found += 1
    assert found >= 1
