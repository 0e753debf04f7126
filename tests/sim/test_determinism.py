"""Same seed, same run: the simulator is reproducible event for event, and a different seed explores differently."""

from __future__ import annotations

from raftkv.sim.run import SimOptions, run_seed


def _trace(seed: int) -> list[str]:
    result = run_seed(seed, SimOptions.draw(seed, duration_ms=1500), trace=True)
    assert result.ok, result.failure
    assert result.trace is not None
    return result.trace


def test_same_seed_gives_the_same_trace() -> None:
    for seed in (3, 11):
        first, second = _trace(seed), _trace(seed)
        assert len(first) > 500
        assert first == second


def test_different_seeds_give_different_runs() -> None:
    assert _trace(3) != _trace(4)


def test_swarm_options_are_drawn_from_the_seed_and_overridable() -> None:
    a, b = SimOptions.draw(21), SimOptions.draw(21)
    assert a == b
    assert SimOptions.draw(21, nodes=7).nodes == 7
    assert len({SimOptions.draw(s).describe() for s in range(1, 50)}) > 40
