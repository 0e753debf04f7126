"""Automatic compaction of the history: when the leader proposes a ``Compact`` (etcd's ``--auto-compaction-*``).

Theory of operation
-------------------
The history grows with every write until a compaction removes what only old reads could see, and a snapshot
carries the whole retained history, so an unbounded history makes every snapshot dearer. The leader's runtime
asks :meth:`AutoCompactor.due` about once a second and proposes ``Compact(revision)`` when it says so; the
decision uses the leader's clock, but only the *command* is replicated (no clock in the state machine).

Two modes, etcd's:

* ``revision``: keep the last ``retention`` revisions. A compaction is proposed once the store is a tenth of the
  retention past the last one (not at every write: each compaction is a log entry).
* ``periodic``: keep what was written in the last ``retention`` seconds. The compactor samples the store's
  revision every tenth of the retention and compacts to the newest sample at least ``retention`` old, so a
  watcher can always resume from a revision it saw within the retention.

A retention of 0 turns automatic compaction off (etcd's default; raftkv's default keeps 10,000 revisions, see
docs/kv.md "Departures from etcd").
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

Mode = Literal["revision", "periodic"]
MODES: Final = ("revision", "periodic")
DEFAULT_MODE: Final[Mode] = "revision"
DEFAULT_RETENTION: Final = "10000"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Retention:
    """``amount`` revisions (revision mode) or seconds (periodic mode); 0: no automatic compaction."""

    mode: Mode
    amount: float

    @property
    def enabled(self) -> bool:
        return self.amount > 0


def parse_retention(mode: str, value: str) -> Retention:
    """``--auto-compaction-mode`` and ``--auto-compaction-retention``: a revision count, or a duration (``90s``,
    ``30m``, ``1h``; a bare number is hours, as in etcd). ``ValueError`` with a one-line reason otherwise."""
    if mode not in MODES:
        raise ValueError(f"--auto-compaction-mode {mode!r}: use revision or periodic")
    text = value.strip()
    if mode == "revision":
        if not text.isdigit():
            raise ValueError(
                f"--auto-compaction-retention {value!r}: in revision mode, a number of revisions to keep (0: off)"
            )
        return Retention("revision", int(text))
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"--auto-compaction-retention {value!r}: in periodic mode, a duration such as 90s, 30m or 1h (0: off)"
        )
    number, unit = float(match.group(1)), match.group(2) or "h"
    return Retention("periodic", number * _UNIT_S[unit])


class AutoCompactor:
    """Decides when the leader proposes a compaction, and at which revision (see the module docstring)."""

    __slots__ = ("_last_sample", "_samples", "retention")

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self._samples: deque[tuple[float, int]] = deque()
        self._last_sample = float("-inf")

    def due(self, now_s: float, revision: int, compact_revision: int) -> int | None:
        """The revision to compact at now, or None. ``now_s`` is a monotonic clock of the proposer."""
        r = self.retention
        if not r.enabled:
            return None
        if r.mode == "revision":
            keep_from = revision - int(r.amount)
            step = max(1, int(r.amount) // 10)
            return keep_from if keep_from >= compact_revision + step and keep_from >= 1 else None
        if now_s - self._last_sample >= r.amount / 10:
            self._samples.append((now_s, revision))
            self._last_sample = now_s
        target = None
        while self._samples and self._samples[0][0] <= now_s - r.amount:
            target = self._samples.popleft()[1]
        if target is not None:
            self._samples.appendleft((now_s - r.amount, target))  # still the newest old-enough sample
            if target > compact_revision and target >= 1:
                return target
        return None

    def reset(self) -> None:
        """Forget the samples (this node just became leader: its own clock starts now)."""
        self._samples.clear()
        self._last_sample = float("-inf")
