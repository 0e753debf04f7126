"""Configuration of one consensus core.

The defaults follow DESIGN.md's timing (a 10 ms tick in the runtime): heartbeat every 5 ticks, election timeout
drawn from [15, 30) ticks — the Raft paper's recommended 150–300 ms (§9.3). Randomness comes from ``rng``, a
``random.Random`` the caller seeds, so the core stays deterministic (the simulator depends on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from raftkv.raft.errors import ConfigError
from raftkv.raft.types import ConfState, Index, NodeId


class RandomSource(Protocol):
    """What the core needs of a random generator (``random.Random`` fits). Injected, so runs replay."""

    def randrange(self, start: int, stop: int, /) -> int: ...


@dataclass(slots=True)
class RaftConfig:
    """Settings for :class:`~raftkv.raft.node.RawNode`. Validated by :meth:`validate`."""

    id: NodeId
    voters: tuple[NodeId, ...]
    """The bootstrap voters, used only while storage holds no configuration (a fresh node): once a
    configuration is in the log or a snapshot, that is the membership. Empty: a node joining an existing
    cluster, which learns the configuration from the leader and never campaigns before it does."""
    rng: RandomSource = field(repr=False)
    election_ticks: int = 15
    """Minimum election timeout, in ticks. The timeout is drawn from [election_ticks, election_ticks + jitter)."""
    election_jitter_ticks: int | None = None
    """Width of the random range; ``None`` means ``election_ticks`` (so the range is [e, 2e), §5.2)."""
    heartbeat_ticks: int = 5
    pre_vote: bool = True
    """Dissertation §9.6: campaign only after a pre-vote round shows the node could win."""
    check_quorum: bool = True
    """A leader steps down when it has not heard from a quorum within an election timeout (dissertation §6.2),
    and followers that heard from a leader recently ignore vote requests (dissertation §4.2.3)."""
    lazy_commit: bool = True
    """Leader: tell followers of a commit index that moved without new entries at the next tick (or with the next
    append, whichever comes first) instead of at once. Raft only needs the commit index to reach followers
    eventually (Figure 2: it rides on AppendEntries); sending it at once costs a round of empty appends and
    their acknowledgements per commit, which with few writes in flight is half the messages. Followers then
    apply up to a tick later (their serializable reads and watches lag by that much more)."""
    max_msg_entries: int = 1024
    max_msg_bytes: int = 1 << 20
    max_inflight_msgs: int = 256
    """Bound on in-flight AppendEntries per follower in replicate mode (flow control)."""
    max_inflight_bytes: int = 1 << 20
    """Bound on the entry bytes in flight per follower in replicate mode (0: none; etcd-io/raft's
    ``MaxInflightBytes``). Besides sparing a slow follower's buffers, it bounds the leader's work per step:
    without it a follower 100,000 entries behind (a learner fresh from a snapshot) gets its whole backlog read,
    encoded and sent in one step, holding the event loop past an election timeout (issue 15's learner join)."""
    applied: Index = Index(0)
    """Last index the state machine has already applied (it persists its own progress); never re-delivered."""
    bootstrap: ConfState | None = None
    """The bootstrap configuration with addresses (the runtime's, from ``--peers``); default: ``voters`` with
    none. Must hold the same ids as ``voters``."""

    def validate(self) -> None:
        if self.id <= 0:
            raise ConfigError(f"node id must be a positive integer, got {self.id}")
        if len(set(self.voters)) != len(self.voters):
            raise ConfigError(f"voters contain duplicates: {sorted(self.voters)}")
        if self.voters and self.id not in self.voters:
            raise ConfigError(f"node id {self.id} is not among the voters {sorted(self.voters)}")
        if self.bootstrap is not None and tuple(sorted(self.bootstrap.voters)) != tuple(sorted(self.voters)):
            raise ConfigError(f"the bootstrap configuration's voters differ from {sorted(self.voters)}")
        if any(v <= 0 for v in self.voters):
            raise ConfigError(f"voter ids must be positive integers, got {sorted(self.voters)}")
        if self.heartbeat_ticks < 1:
            raise ConfigError(f"heartbeat_ticks must be >= 1, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError(
                f"election_ticks ({self.election_ticks}) must exceed heartbeat_ticks ({self.heartbeat_ticks})"
            )
        if self.election_jitter_ticks is not None and self.election_jitter_ticks < 1:
            raise ConfigError(f"election_jitter_ticks must be >= 1, got {self.election_jitter_ticks}")
        if self.max_msg_entries < 1 or self.max_msg_bytes < 1 or self.max_inflight_msgs < 1:
            raise ConfigError("max_msg_entries, max_msg_bytes and max_inflight_msgs must all be >= 1")
        if self.max_inflight_bytes < 0:
            raise ConfigError(f"max_inflight_bytes must be >= 0 (0: no bound), not {self.max_inflight_bytes}")
        if self.applied < 0:
            raise ConfigError(f"applied must be >= 0, got {self.applied}")
