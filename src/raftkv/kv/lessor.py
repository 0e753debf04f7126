"""When leases expire: the leader's timers (etcd's lessor). Pure: the caller passes its monotonic clock in.

Theory of operation
-------------------
A lease's grant and revocation are log commands (``LeaseGrant``/``LeaseRevoke``, applied by every replica); its
*expiry* is not state: only the leader keeps a deadline per lease, refreshes it on each keep-alive (which is not
replicated, as in etcd), and proposes ``LeaseRevoke(id, expired=True)`` once a deadline passes. So there is no
wall clock in the state machine, and a keep-alive costs no log entry.

The guarantee (docs/kv.md "Leases"), where ``E`` is the new leader's maximum election timeout:

* **Never early**: a lease expires no earlier than its TTL after the last keep-alive the cluster acknowledged.
  A keep-alive is answered only by the leader, after it has moved the deadline. A new leader knows no
  deadlines, so on taking office it sets every lease's to ``now + TTL + E`` (:meth:`Lessor.promote`): the
  old leader's clock and the last keep-alive it acknowledged are at most ``E`` behind the new leader's
  election, so no lease the old leader would have kept alive expires sooner. A leader that loses office drops
  its timers (:meth:`Lessor.demote`); its revoke proposals then fail, since it is no longer leader.
* **Not much late, while a leader is up**: the leader checks deadlines every tick of its runtime, so a lease
  is revoked at most one check interval after its deadline, plus the time to commit the revoke.

Leases the leader learns of by applying a grant start their deadline at that moment (:meth:`Lessor.sync`,
which follows the state machine's lease table).
"""

from __future__ import annotations

from collections.abc import Mapping


class Lessor:
    """Deadlines of the leases a leader keeps (see the module docstring). Not thread-safe."""

    __slots__ = ("_deadlines", "_ttls", "leading")

    def __init__(self) -> None:
        self._deadlines: dict[int, float] = {}
        self._ttls: dict[int, int] = {}
        self.leading = False

    def promote(self, now_s: float, leases: Mapping[int, int], extend_s: float) -> None:
        """Take office: every lease (id -> granted TTL, from the state machine) lives at least ``TTL +
        extend_s`` from now."""
        self.leading = True
        self._ttls = dict(leases)
        self._deadlines = {lease: now_s + ttl + extend_s for lease, ttl in leases.items()}

    def demote(self) -> None:
        self.leading = False
        self._deadlines.clear()
        self._ttls.clear()

    def sync(self, now_s: float, leases: Mapping[int, int]) -> None:
        """Follow the state machine's lease table: new leases start their TTL now, revoked ones are dropped."""
        if not self.leading:
            return
        for lease, ttl in leases.items():
            if lease not in self._ttls:
                self._ttls[lease] = ttl
                self._deadlines[lease] = now_s + ttl
        for lease in [lease for lease in self._ttls if lease not in leases]:
            del self._ttls[lease]
            del self._deadlines[lease]

    def keep_alive(self, lease: int, now_s: float) -> int | None:
        """Refresh ``lease``'s deadline to a whole TTL from now; its TTL, or None if this leader does not know
        it (not granted, revoked, or not leader) or it has expired already: its revocation is due, and a
        keep-alive acknowledged now would promise a TTL that the revoke is about to break (etcd refuses too)."""
        ttl = self._ttls.get(lease) if self.leading else None
        if ttl is None or self._deadlines[lease] <= now_s:
            return None
        self._deadlines[lease] = max(self._deadlines[lease], now_s + ttl)
        return ttl

    def remaining(self, lease: int, now_s: float) -> float | None:
        """Seconds until ``lease`` expires (0 once due), or None if unknown here."""
        deadline = self._deadlines.get(lease) if self.leading else None
        return None if deadline is None else max(0.0, deadline - now_s)

    def expired(self, now_s: float) -> list[int]:
        """The leases whose deadline has passed, in id order (the caller proposes their revocation)."""
        if not self.leading:
            return []
        return sorted(lease for lease, deadline in self._deadlines.items() if deadline <= now_s)

    def __len__(self) -> int:
        return len(self._ttls)
