"""When the leader compacts the history by itself (etcd's --auto-compaction-mode/-retention), and bad flags."""

from __future__ import annotations

import pytest

from raftkv.errors import ConfigError
from raftkv.kv.compactor import AutoCompactor, Retention, parse_retention
from raftkv.kvserver import KVServer
from raftkv.runtime.config import build_config


def test_revision_mode_keeps_the_last_n_revisions_in_tenth_steps() -> None:
    c = AutoCompactor(Retention("revision", 1000))
    assert c.due(0.0, 1000, 0) is None, "nothing older than the retention yet"
    assert c.due(0.0, 1099, 0) is None, "less than a tenth of the retention to gain"
    assert c.due(0.0, 1100, 0) == 100
    assert c.due(1.0, 1150, 100) is None
    assert c.due(2.0, 1200, 100) == 200


def test_periodic_mode_compacts_to_what_was_current_one_retention_ago() -> None:
    c = AutoCompactor(Retention("periodic", 100.0))  # samples every 10 s
    revisions = {t: 50 * t + 1 for t in range(0, 300)}
    proposals = {}
    compacted = 0
    for t in range(0, 300):
        target = c.due(float(t), revisions[t], compacted)
        if target is not None:
            assert target > compacted
            proposals[t] = target
            compacted = target
    assert min(proposals) == 100, "the first compaction once a whole retention has passed"
    for t, target in proposals.items():
        # What is compacted away was written more than a retention ago, and at most a sampling period more.
        assert revisions[max(0, t - 110)] <= target <= revisions[t - 100]


def test_a_new_leader_starts_measuring_from_its_own_start() -> None:
    c = AutoCompactor(Retention("periodic", 10.0))
    for t in range(12):
        c.due(float(t), t, 0)
    c.reset()
    assert all(c.due(float(t), t, 0) is None for t in range(100, 109)), "no sample is a retention old yet"
    assert c.due(111.0, 111, 0) == 101, "the newest sample a whole retention old (taken at 101)"


def test_zero_turns_it_off() -> None:
    for mode in ("revision", "periodic"):
        r = parse_retention(mode, "0")
        assert not r.enabled and AutoCompactor(r).due(1e9, 10**9, 0) is None


@pytest.mark.parametrize(
    ("mode", "value", "amount"),
    [("revision", "5000", 5000), ("periodic", "1h", 3600), ("periodic", "30m", 1800), ("periodic", "90s", 90),
     ("periodic", "2", 7200), ("periodic", "1.5h", 5400), ("periodic", "500ms", 0.5)],
)  # fmt: skip
def test_retention_values(mode: str, value: str, amount: float) -> None:
    assert parse_retention(mode, value) == Retention(mode, amount)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "value", "message"),
    [
        ("revision", "1h", "in revision mode, a number of revisions to keep"),
        ("revision", "-5", "in revision mode, a number of revisions to keep"),
        ("periodic", "soon", "in periodic mode, a duration such as 90s, 30m or 1h"),
        ("hourly", "1", "--auto-compaction-mode 'hourly': use revision or periodic"),
    ],
)
def test_bad_flags_are_one_line_config_errors(mode: str, value: str, message: str) -> None:
    cfg = build_config(
        {
            "id": 1,
            "data_dir": "/tmp/x",
            "listen_peer": "127.0.0.1:7001",
            "peers": "1=127.0.0.1:7001",
            "auto_compaction_mode": mode,
            "auto_compaction_retention": value,
        }
    )
    with pytest.raises(ConfigError, match=message):
        KVServer(cfg, check_ports=False)
