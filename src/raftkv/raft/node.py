"""``RawNode``: one Raft server as a pure, deterministic state machine (etcd-io/raft's RawNode).

Theory of operation
-------------------
The node does no I/O and reads no clock. Its driver (the simulator, or the asyncio runtime) feeds it:

* ``tick()`` — one unit of logical time; elections and heartbeats are counted in ticks;
* ``step(msg)`` — a message from a peer;
* ``propose(data)`` / ``campaign()`` / ``transfer_leadership(to)`` — local requests;

and collects its output with ``ready()``, performs it under the contract documented in ``ready.py``, then calls
``advance()``. Given the same inputs in the same order and the same seeded ``rng``, a node makes the same
decisions: this is what lets the simulator replay any run from its seed.

Roles change only in ``_become_follower`` / ``_become_pre_candidate`` / ``_become_candidate`` /
``_become_leader``; each role has its own step function (``_step_follower``, ``_step_candidate``,
``_step_leader``) and tick function (``_tick_election``, ``_tick_heartbeat``). ``stop()`` moves the node to
``Role.DEAD`` (the seed's Dead state), after which it ignores everything.

Safety rules and where they live
--------------------------------
* §5.1 stale terms: ``step`` drops or answers (never acts on) a message from an older term; a newer term makes
  the node a follower of that term first.
* §5.2 one vote per term, persisted before it is sent: ``_handle_vote_request`` + ``Ready.messages_after_sync``.
* §5.4.1 election restriction: ``RaftLog.is_up_to_date``.
* §5.3 log matching and conflict truncation: ``RaftLog.maybe_append`` (never truncates on a stale append).
* §5.4.2 commit only current-term entries by counting replicas: ``_maybe_commit``.
* §10.2.1 the leader counts its own vote toward commit only once its write is durable: ``advance``.
* Dissertation §9.6 pre-vote and §4.2.3/§6.2 check-quorum: ``_campaign``, ``_in_lease``, ``_tick_heartbeat``.
* Dissertation §4.1 membership changes, one server at a time, effective when appended, each only after the
  previous one committed and after the leader committed an entry of its term: ``propose_conf_change``,
  ``_track_conf``; learners never vote or count (``_request_votes``, ``raftkv.raft.quorum`` over ``voters``);
  §4.2.2 a leader that removed itself steps down once the change commits: ``_maybe_step_down_removed``.
  The rules and the reasons are in ``raftkv.raft.membership``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.raft.config import RaftConfig
from raftkv.raft.errors import NotLeader, ProposalDropped, invariant
from raftkv.raft.log import RaftLog
from raftkv.raft.membership import ConfChange, ConfChangeInProgress, apply_change, decode_conf, encode_conf
from raftkv.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftkv.raft.progress import Inflights, Progress, ProgressState
from raftkv.raft.quorum import VoteResult, committed_index, vote_result
from raftkv.raft.ready import ReadState, Ready, Role, SoftState
from raftkv.raft.storage import LogStorage
from raftkv.raft.types import NO_NODE, ConfState, Entry, EntryType, HardState, Index, NodeId, SnapshotMeta, Term

UNSAFE_HOOKS = frozenset(
    {
        "commit_old_term_entries",
        "vote_before_persist",
        "forget_vote",
        "read_without_quorum",
        "concurrent_conf_changes",
        "conf_change_before_term_commit",
        "learners_vote",
    }
)
"""Test-only switches that break one safety rule each, so tests can prove the simulator's checkers bite.

* ``commit_old_term_entries``: count replicas of an old-term entry to commit it (the Figure 8 bug, §5.4.2).
* ``vote_before_persist``: send a granted vote before the vote is durable (§5.2).
* ``forget_vote``: never persist ``votedFor`` (PySyncObj's behaviour): a restarted node may vote twice in a term.
* ``read_without_quorum``: answer ReadIndex at once, without confirming leadership (a deposed leader's stale read).
* ``concurrent_conf_changes``: accept a membership change while the previous one is not committed (§4.1).
* ``conf_change_before_term_commit``: accept a membership change before the leader committed an entry of its
  own term (the single-server-change bug published on raft-dev in 2015).
* ``learners_vote``: ask learners for votes and count them as if they were voters.
"""


@dataclass(slots=True)
class _ReadRound:
    """One ReadIndex round (dissertation §6.4): reads that arrived before it started share its index."""

    ctx: bytes
    index: Index
    reads: list[bytes]
    acks: set[NodeId]


@dataclass(frozen=True, slots=True)
class PeerStatus:
    match: Index
    next: Index
    state: str
    inflight: int
    recent_active: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: Role
    term: Term
    vote: NodeId
    leader: NodeId
    commit: Index
    applied: Index
    first_index: Index
    last_index: Index
    progress: dict[NodeId, PeerStatus]
    """Per-peer replication progress (voters and learners); only a leader has any."""
    lead_transferee: NodeId
    conf: ConfState
    """The configuration in effect (the latest in the log, committed or not: dissertation §4.1)."""
    conf_index: Index
    """The log index of the entry ``conf`` comes from (0: the bootstrap configuration, not in the log yet)."""


class RawNode:
    """A single Raft participant. See the module docstring for the driver protocol."""

    def __init__(self, config: RaftConfig, storage: LogStorage, unsafe: frozenset[str] = frozenset()) -> None:
        config.validate()
        invariant(unsafe <= UNSAFE_HOOKS, f"unknown unsafe hooks {sorted(unsafe - UNSAFE_HOOKS)}")
        self._cfg = config
        self._unsafe_commit_old = "commit_old_term_entries" in unsafe
        self._unsafe_vote_early = "vote_before_persist" in unsafe
        self._unsafe_forget_vote = "forget_vote" in unsafe
        self._unsafe_read_early = "read_without_quorum" in unsafe
        self._unsafe_concurrent_conf = "concurrent_conf_changes" in unsafe
        self._unsafe_conf_before_commit = "conf_change_before_term_commit" in unsafe
        self._unsafe_learners_vote = "learners_vote" in unsafe
        self.id = config.id
        self._jitter = config.election_jitter_ticks or config.election_ticks

        # Max bytes of committed entries handed out per Ready: restarts with long logs stay bounded in memory.
        self.log = RaftLog(storage, config.applied, max_apply_bytes=max(config.max_msg_bytes, 64 << 20))
        hard_state, boundary = storage.initial_state()
        self.latest_snapshot: SnapshotMeta = boundary

        # The configuration (dissertation §4.1: the latest configuration entry in the log, committed or not).
        # ``_conf_base`` holds at ``_conf_base_index`` (the snapshot boundary); ``_conf_log`` lists the
        # configuration entries above it, ascending, so a truncation can go back to the one before.
        self._conf_base_index = boundary.index
        self._conf_base = boundary.conf
        self._conf_log: list[tuple[Index, ConfState]] = []
        for index in storage.conf_indexes():
            if index > boundary.index:
                (entry,) = storage.entries(index, Index(index + 1))
                self._conf_log.append((index, decode_conf(entry.data)))
        self._conf_base_is_bootstrap = boundary.conf.is_empty()
        """``_conf_base`` is the bootstrap configuration (from ``config``), not one read from storage."""
        if self._conf_base_is_bootstrap:
            self._conf_base = config.bootstrap or ConfState.of_voters(config.voters)
        self.voters: tuple[NodeId, ...] = ()
        self.learners: tuple[NodeId, ...] = ()
        self.peers: tuple[NodeId, ...] = ()
        """Every member but this node (voters and learners): whom a leader replicates to."""
        self._acting_conf: ConfState | None = None
        """The configuration ``_use_conf`` last put in effect."""
        self._ready_conf: ConfState | None = None
        """The configuration the last ``Ready`` reported (``Ready.conf_state`` carries changes only)."""
        """The newest durable snapshot the driver holds (``set_snapshot``): what a lagging follower is sent."""
        self.term: Term = hard_state.term
        self.vote: NodeId = hard_state.vote
        self.role = Role.FOLLOWER
        self.leader: NodeId = NO_NODE

        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.lead_transferee: NodeId = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_ticks

        self._msgs: list[Message] = []
        self._msgs_after_sync: list[Message] = []
        self._events: list[str] = []
        self._pending_ready: Ready | None = None
        self._prev_hard_state = HardState(self.term, self.vote, self.log.committed)
        self._prev_soft_state = SoftState(self.role, self.leader, self.term)
        self._need_bcast = False
        """Leader: entries were proposed since the last flush; send them in the next ``ready()``."""
        self._commit_dirty = False
        """Leader: the commit index moved since followers were last sent it."""
        self._commit_due = False
        """Leader: followers must hear of the moved commit index in the next ``ready()``, even with no new entries
        (at once without ``lazy_commit``; else once a tick passed with the commit still unsent)."""
        self._reads_waiting: list[bytes] = []
        """Leader: ReadIndex requests not yet in a round."""
        self._read_round: _ReadRound | None = None
        self._read_rounds = 0
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[bytes] = []

        self._use_conf(self.conf)
        self._become_follower(self.term, NO_NODE)
        self._events.append(
            f"started at term {self.term} (vote {self.vote or 'none'}, commit {self.log.committed}, "
            f"applied {self.log.applied}, last index {self.log.last_index()}) with {self.conf.describe()}"
            + (" (bootstrap)" if self._conf_bootstrap else f" (from index {self.conf_index})")
        )

    # ======================================================================================================
    # Driver API
    # ======================================================================================================

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        elif self.role is not Role.DEAD:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (with a pre-vote round first if enabled), as if the timeout had fired."""
        if self.role in (Role.LEADER, Role.DEAD):
            return
        self._campaign(transfer=False)

    def propose(self, data: bytes) -> Index:
        """Append a command to the leader's log and return its index. Raises ``NotLeader`` elsewhere."""
        return self.propose_batch((data,))

    def propose_batch(self, datas: Sequence[bytes]) -> Index:
        """Append several commands at consecutive indexes; returns the index of the first.

        The entries are sent to followers at the next ``ready()``, so proposals made between two ``ready()``
        calls travel together in one AppendEntries per follower.
        """
        self._check_may_append()
        first = Index(self.log.last_index() + 1)
        term = self.term
        self.log.append([Entry(term, Index(first + k), d) for k, d in enumerate(datas)])
        self._need_bcast = True
        return first

    def _check_may_append(self) -> None:
        """Raise unless this node may append a proposal now: it leads, and no transfer is under way."""
        if self.role is Role.DEAD:
            raise ProposalDropped("the node is stopped")
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee != NO_NODE:
            raise ProposalDropped(f"leadership is being transferred to node {self.lead_transferee}")

    def transfer_leadership(self, to: NodeId = NO_NODE) -> NodeId:
        """Hand leadership to ``to`` (dissertation §3.10): catch it up, then tell it to campaign at once.

        With ``NO_NODE``, to the most caught-up voter (:meth:`transfer_target`). Returns the target. Proposals
        are refused while the transfer is under way; it is abandoned after an election timeout.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if to == NO_NODE:
            to = self.transfer_target()
            if to == NO_NODE:
                raise ValueError("cannot transfer leadership: there is no other voter")
        if to == self.id or to not in self.voters:
            raise ValueError(f"cannot transfer leadership to node {to}: not another voter")
        self.lead_transferee = to
        self.election_elapsed = 0
        self._events.append(f"transferring leadership to {to}")
        pr = self.progress[to]
        if pr.match == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, to))
        else:
            self._maybe_send_append(to, send_if_empty=True)
        return to

    def transfer_target(self) -> NodeId:
        """The voter a leader would hand over to: the most caught up, preferring ones heard from recently
        (then the lowest id); ``NO_NODE`` if there is no other voter or this node does not lead."""
        if self.role is not Role.LEADER:
            return NO_NODE
        best: tuple[bool, Index, int] | None = None
        target = NO_NODE
        for v in self.voters:
            pr = self.progress.get(v)
            if v == self.id or pr is None:
                continue
            rank = (pr.recent_active, pr.match, -v)
            if best is None or rank > best:
                best, target = rank, v
        return target

    # --- membership (dissertation §4.1; the rules are in raftkv.raft.membership) --------------------------

    @property
    def conf(self) -> ConfState:
        """The configuration in effect: the latest configuration entry in the log, committed or not."""
        return self._conf_log[-1][1] if self._conf_log else self._conf_base

    @property
    def conf_index(self) -> Index:
        """The index of the entry the configuration comes from (the snapshot boundary, or 0: bootstrap)."""
        return (
            self._conf_log[-1][0] if self._conf_log else (Index(0) if self._conf_bootstrap else self._conf_base_index)
        )

    @property
    def conf_base_index(self) -> Index:
        """The lowest index ``conf_at`` answers for (the boundary the node started from, or its last install)."""
        return self._conf_base_index

    @property
    def _conf_bootstrap(self) -> bool:
        """The configuration in effect is the bootstrap one, not yet in the log: the first leader writes it as
        its first entry, so that every later node (a new member, a wiped one) learns it from the log."""
        return self._conf_base_is_bootstrap and not self._conf_log

    def conf_at(self, index: Index) -> ConfState:
        """The configuration as of log index ``index`` (for a snapshot taken there). ``index`` must not lie
        below the snapshot boundary the node started from or installed last."""
        invariant(index >= self._conf_base_index, f"conf_at({index}) below the boundary {self._conf_base_index}")
        conf = self._conf_base
        for i, c in self._conf_log:
            if i > index:
                break
            conf = c
        return conf

    def propose_conf_change(self, cc: ConfChange) -> Index:
        """Append a single-server membership change (dissertation §4.1); returns its index.

        It takes effect at once on this leader (and on each follower as it appends it); it is committed, like
        any entry, once a majority of the *new* voters hold it. Raises ``NotLeader``; ``ProposalDropped``
        during a leadership transfer; :class:`~raftkv.raft.membership.ConfChangeInProgress` while the previous
        change is not committed or this leader has not committed an entry of its term yet (both retryable);
        :class:`~raftkv.raft.membership.InvalidConfChange` for a change that does not apply (nothing changes).
        """
        self._check_may_append()
        log = self.log
        if log.term_or_none(log.committed) != self.term and not self._unsafe_conf_before_commit:
            raise ConfChangeInProgress(
                f"node {self.id} has just become leader (term {self.term}) and has not committed an entry of its "
                "term yet; retry in a moment"
            )
        pending = self.conf_index
        if pending > log.committed and not self._unsafe_concurrent_conf:
            raise ConfChangeInProgress(
                f"the membership change at index {pending} is not committed yet; one change at a time"
            )
        new = apply_change(self.conf, cc)
        index = Index(log.last_index() + 1)
        log.append([Entry(self.term, index, encode_conf(new), EntryType.CONF_CHANGE)])
        self._events.append(f"proposed membership change {cc.type.value} {cc.node} at index {index}")
        self._conf_appended(index, new)
        self._need_bcast = True
        return index

    def _conf_appended(self, index: Index, conf: ConfState) -> None:
        self._conf_log.append((index, conf))
        self._use_conf(conf)

    def _track_conf(self, entries: Sequence[Entry], truncated_from: Index) -> None:
        """Follower: the log now holds ``entries`` (a conflicting suffix from ``truncated_from`` was replaced).

        Keeps the configuration equal to the latest configuration entry in the log (§4.1), going back to an
        earlier one when the entry that set it was truncated away.
        """
        changed = False
        if truncated_from and self._conf_log and self._conf_log[-1][0] >= truncated_from:
            self._conf_log = [(i, c) for i, c in self._conf_log if i < truncated_from]
            changed = True
        for e in entries:
            newest = self._conf_log[-1][0] if self._conf_log else self._conf_base_index
            if e.type is EntryType.CONF_CHANGE and e.index > newest:
                self._conf_log.append((e.index, decode_conf(e.data)))
                changed = True
        if changed:
            self._use_conf(self.conf)

    def _conf_before_latest(self) -> ConfState:
        """The configuration the latest configuration entry replaced."""
        return self._conf_log[-2][1] if len(self._conf_log) > 1 else self._conf_base

    def _conf_restored(self, meta: SnapshotMeta) -> None:
        """The log was replaced by a snapshot: its configuration is the one in effect."""
        self._conf_base_index = meta.index
        self._conf_base = meta.conf
        self._conf_log = []
        self._conf_base_is_bootstrap = False
        self._use_conf(meta.conf)

    def _use_conf(self, conf: ConfState) -> None:
        """Make ``conf`` the configuration this node acts on (voters, learners, a leader's progress).

        A leader keeps replicating to members that a not-yet-committed change removed (they count for
        nothing), so that they receive their removal and learn that it committed (etcd and hashicorp do the
        same); it drops them once the change commits, sending each the commit index first.
        """
        self.voters = conf.voters
        self.learners = conf.learners
        members = set(conf.ids)
        if self.conf_index > self.log.committed and self._conf_log:
            members |= set(self._conf_before_latest().ids)
        self.peers = tuple(sorted(i for i in members if i != self.id))
        if self.role is Role.LEADER:
            # A new member's first append carries the newest entry (the change that added it): its
            # configuration reaches it at once, and the probe walks back from there (§5.3).
            last = self.log.last_index()
            cap, cap_bytes = self._cfg.max_inflight_msgs, self._cfg.max_inflight_bytes
            for peer in self.peers:
                if peer not in self.progress:
                    inflights = Inflights(cap, cap_bytes)
                    self.progress[peer] = Progress(match=Index(0), next=Index(max(last, 1)), inflights=inflights)
            for peer in [p for p in self.progress if p != self.id and p not in self.peers]:
                self._maybe_send_append(peer, send_if_empty=True)  # the commit of its removal, if it can go
                del self.progress[peer]
            if self.lead_transferee != NO_NODE and self.lead_transferee not in self.voters:
                self._events.append(f"leadership transfer to {self.lead_transferee} abandoned: no longer a voter")
                self.lead_transferee = NO_NODE
            # Fewer voters may already hold a quorum: of an entry, of a read round's acknowledgements. Nothing
            # else would look again (no reply may ever come: sim seed 305, a round left waiting on a removed
            # voter).
            if self._maybe_commit():
                self._commit_moved()
            self._maybe_finish_read_round()
        if self._acting_conf is not None and conf != self._acting_conf:
            self._events.append(f"configuration now {conf.describe()} (index {self.conf_index})")
        self._acting_conf = conf

    def _maybe_step_down_removed(self) -> None:
        """§4.2.2: a leader that is not in the configuration steps down once that configuration is committed.

        It first hands over to the most caught-up voter (TimeoutNow), so the cluster does not wait out an
        election timeout for its next leader.
        """
        if self.role is not Role.LEADER or self.conf.member(self.id) is not None:
            return
        if self.log.committed < self.conf_index:
            return
        target = self.transfer_target()
        if target != NO_NODE and self.progress[target].match == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, target))
        self._events.append(f"stepping down at term {self.term}: removed from the configuration (committed)")
        self._become_follower(self.term, NO_NODE)

    def set_snapshot(self, meta: SnapshotMeta) -> None:
        """The driver saved a snapshot covering ``meta.index`` durably; it may now compact the log up to it.

        A follower whose next entry is no longer in the log is sent the newest such snapshot (§7).
        """
        if meta.index > self.latest_snapshot.index:
            self.latest_snapshot = meta
        if meta.index >= self._conf_base_index and not self._conf_bootstrap:
            # A snapshot carries the configuration as of its index (the driver takes it from ``conf_at``).
            invariant(
                meta.conf == self.conf_at(meta.index),
                f"snapshot at {meta.index} carries {meta.conf.describe()}, the log says "
                f"{self.conf_at(meta.index).describe()}",
            )

    def report_snapshot(self, peer: NodeId, success: bool) -> None:
        """The transport finished (or gave up) streaming a snapshot to ``peer``.

        On failure the leader goes back to probing at once (and sends the snapshot again if still needed);
        on success it waits for the follower's acknowledgement of the install.
        """
        pr = self.progress.get(peer) if self.role is Role.LEADER else None
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not success:
            pr.pending_snapshot = Index(0)
            pr.become_probe()
            return
        # Delivered: the follower installs it; its acknowledgement may take a while (a large store).
        pr.snapshot_delivered = True
        pr.snapshot_ticks = 0

    def report_unreachable(self, peer: NodeId) -> None:
        """The transport lost its connection to ``peer`` (e.g. the peer's process died and reset it).

        If ``peer`` is our leader, stop honouring its lease now instead of waiting out the election timeout:
        we will grant other candidates' votes at once and campaign after our randomized jitter. This cannot
        disrupt a healthy leader: the other followers still hold their leases and refuse our pre-vote (§9.6).
        """
        if self.role is Role.FOLLOWER and peer == self.leader and peer != NO_NODE:
            self._events.append(f"lost the connection to leader {peer}: its lease no longer holds")
            self.election_elapsed = max(self.election_elapsed, self._cfg.election_ticks)
            self.leader = NO_NODE

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point (ReadIndex, dissertation §6.4); leader only.

        The answer comes back in a later ``Ready.read_states`` as ``ReadState(index, ctx)``: once the state
        machine has applied ``index``, a read served from it reflects every write acknowledged before this call.
        If leadership is lost first, ``ctx`` appears in ``Ready.dropped_reads`` instead. No log entry is written.
        """
        if self.role is Role.DEAD:
            raise ProposalDropped("the node is stopped")
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        self._reads_waiting.append(ctx)
        self._maybe_start_read_round()

    def step(self, msg: Message) -> None:
        """Process one message from a peer."""
        if self.role is Role.DEAD:
            return
        if (
            isinstance(msg, RequestVote)
            and self.conf.member(msg.src) is None
            and not self.conf.is_empty()
            and not self.log.is_up_to_date(msg.last_index, msg.last_term)
        ):
            # Dissertation §4.2.3, disruptive removed servers: a candidate outside our configuration whose log
            # is behind ours could never get our vote (§5.4.1); all it could do is raise our term and depose
            # our leader, over and over (a removed node that missed its removal). Ignore it. One *ahead* of us
            # is heard: it may be a member added by entries we lack, and with no leader to bring us up to date
            # only our vote can end the election (sim seed 19 of the membership mix).
            return
        if msg.term > self.term:
            if isinstance(msg, RequestVote):
                if not msg.transfer and self._in_lease() and (self._cfg.check_quorum or msg.pre_vote):
                    # Dissertation §4.2.3: a server that heard from a live leader within the minimum election
                    # timeout ignores vote requests, so a returning partitioned node cannot depose it.
                    return
                if msg.pre_vote:
                    # A pre-vote never changes anyone's term (§9.6); answer it from our current term.
                    if self.role is Role.PRE_CANDIDATE and msg.term == self.term + 1 and self._outranked_by(msg):
                        # Liveness only (docs/election-time.md, change b2): two pre-candidates that both win
                        # their pre-votes split the real votes and waste a whole timeout. Of any two, exactly
                        # one steps back — ranking by (log, id) is a total order — so only the top-ranked
                        # one campaigns. Stepping back changes no term, vote or log: it is what losing a
                        # pre-vote already does.
                        self._events.append(f"pre-vote for term {msg.term}: yielding to node {msg.src}")
                        self._become_follower(self.term, NO_NODE)
                    self._handle_vote_request(msg)
                    return
            if isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                pass  # a granted pre-vote echoes the term we would campaign in; it is not a newer term
            else:
                # §5.1: a newer term always comes first — including for a real vote request, which must be
                # judged (and the vote recorded) at the candidate's term, never at our old one.
                leader = msg.src if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)) else NO_NODE
                self._events.append(f"term {self.term} -> {msg.term}: {type(msg).__name__} from node {msg.src}")
                self._become_follower(msg.term, leader)
        elif msg.term < self.term:
            self._answer_stale(msg)
            return

        if isinstance(msg, RequestVote):
            self._handle_vote_request(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    def has_ready(self) -> bool:
        """Whether ``ready()`` would return work. False while a Ready is awaiting ``advance()``."""
        if self._pending_ready is not None or self.role is Role.DEAD:
            return False
        return bool(
            self.log.unstable
            or self.log.pending_snapshot is not None
            or self._msgs
            or self._msgs_after_sync
            or self._events
            or self._need_bcast
            or self._commit_due
            or self._read_states
            or self._dropped_reads
            or self.log.has_next_committed()
            or self._hard_state() != self._prev_hard_state
            or self._soft_state() != self._prev_soft_state
            or self.conf is not self._ready_conf  # replaced only on a change: identity suffices (hot path)
        )

    def ready(self) -> Ready:
        """Collect the work to do; see ``ready.py`` for the contract. Call ``advance()`` when done."""
        invariant(self._pending_ready is None, "ready() called again before advance()")
        self._flush_appends()
        hs = self._hard_state()
        prev = self._prev_hard_state
        hard_state = hs if hs != prev else None
        entries = tuple(self.log.unstable)
        snapshot = self.log.pending_snapshot
        ss = self._soft_state()
        conf = self.conf
        messages, after_sync = tuple(self._msgs), tuple(self._msgs_after_sync)
        if messages and self.role is Role.LEADER and (hs.term != prev.term or hs.vote != prev.vote):
            # A leader's traffic may leave before its write only once its term and vote are durable (§10.2.1
            # assumes it). A candidate that wins on its own vote alone — the one voter of its configuration —
            # becomes leader in the very step that raised its term: if its first appends left now and it
            # crashed before the write, it would come back at the old term, could vote for another node in the
            # term it led, and two leaders would share it (simulator seed 9131: a cluster shrunk to one voter,
            # and a removed node allowed to campaign).
            messages, after_sync = (), messages + after_sync
        rd = Ready(
            hard_state=hard_state,
            entries=entries,
            committed_entries=tuple(self.log.next_committed_entries()),
            messages=messages,
            messages_after_sync=after_sync,
            must_sync=bool(entries) or snapshot is not None or hs.term != prev.term or hs.vote != prev.vote,
            soft_state=ss if ss != self._prev_soft_state else None,
            events=tuple(self._events),
            read_states=tuple(self._read_states),
            dropped_reads=tuple(self._dropped_reads),
            snapshot=snapshot,
            conf_state=conf if conf is not self._ready_conf else None,
        )
        self._ready_conf = conf
        self._msgs.clear()
        self._msgs_after_sync.clear()
        self._events.clear()
        self._read_states.clear()
        self._dropped_reads.clear()
        self._prev_hard_state = hs
        self._prev_soft_state = ss
        if self.role is not Role.DEAD:
            self._pending_ready = rd
        return rd

    def advance(self) -> None:
        """The last Ready was carried out: its entries are durable and its committed entries applied."""
        rd = self._pending_ready
        if rd is None:
            return
        self._pending_ready = None
        if rd.snapshot is not None:
            self.log.snapshot_installed(rd.snapshot)
            self.set_snapshot(rd.snapshot)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                # §10.2.1: only now does the leader's own copy count toward the commit quorum.
                self.progress[self.id].maybe_update(self.log.stable_last_index())
                if self._maybe_commit():
                    self._commit_moved()
                    self._maybe_step_down_removed()
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)

    def stop(self) -> None:
        """Enter the Dead state: drop pending output and ignore every later call."""
        self.role = Role.DEAD
        self.leader = NO_NODE
        self._msgs.clear()
        self._msgs_after_sync.clear()
        self._pending_ready = None

    def status(self) -> Status:
        progress: dict[NodeId, PeerStatus] = {}
        if self.role is Role.LEADER:
            for peer, pr in self.progress.items():
                progress[peer] = PeerStatus(pr.match, pr.next, pr.state.value, len(pr.inflights), pr.recent_active)
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader=self.leader,
            commit=self.log.committed,
            applied=self.log.applied,
            first_index=self.log.first_index(),
            last_index=self.log.last_index(),
            progress=progress,
            lead_transferee=self.lead_transferee,
            conf=self.conf,
            conf_index=self.conf_index,
        )

    # ======================================================================================================
    # Role transitions (the only places ``self.role`` changes, besides ``stop``)
    # ======================================================================================================

    def _reset(self, term: Term) -> None:
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.leader = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.votes = {}
        self.progress = {}
        self.lead_transferee = NO_NODE
        self._need_bcast = False
        self._commit_dirty = False
        self._commit_due = False
        # A read can only be answered by the leader that took it: any role change drops the pending ones.
        if self._read_round is not None:
            self._dropped_reads.extend(self._read_round.reads)
            self._read_round = None
        self._dropped_reads.extend(self._reads_waiting)
        self._reads_waiting = []

    def _reset_randomized_election_timeout(self) -> None:
        # §5.2: a timeout drawn at random from [election_ticks, election_ticks + jitter) splits votes rarely.
        e = self._cfg.election_ticks
        self.randomized_election_timeout = e + self._cfg.rng.randrange(0, self._jitter)

    def _become_follower(self, term: Term, leader: NodeId) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        invariant(self.role is not Role.LEADER, "a leader cannot become a pre-candidate")
        # The term and vote stay as they are: a pre-vote round changes nothing durable (§9.6).
        self.role = Role.PRE_CANDIDATE
        self.leader = NO_NODE
        self.votes = {}
        self.election_elapsed = 0
        self._reset_randomized_election_timeout()

    def _become_candidate(self) -> None:
        invariant(self.role is not Role.LEADER, "a leader cannot become a candidate")
        self._reset(Term(self.term + 1))
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        invariant(self.role is Role.CANDIDATE, f"only a candidate can become leader, not a {self.role.value}")
        granted = sorted(v for v, ok in self.votes.items() if ok)
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        last = self.log.last_index()
        cap, cap_bytes = self._cfg.max_inflight_msgs, self._cfg.max_inflight_bytes
        for v in (self.id, *self.peers):
            inflights = Inflights(cap, cap_bytes)
            self.progress[v] = Progress(match=Index(0), next=Index(last + 1), inflights=inflights)
        me = self.progress[self.id]
        me.state = ProgressState.REPLICATE
        me.match = self.log.stable_last_index()
        me.recent_active = True
        # §5.4.2/§8: a new leader commits entries of earlier terms only by committing one of its own; the no-op
        # gives it one at once (and lets ReadIndex learn the commit index). A cluster's first leader writes its
        # bootstrap configuration instead, so that the configuration is in the log from then on.
        if self._conf_bootstrap:
            conf = self.conf
            self.log.append([Entry(self.term, Index(last + 1), encode_conf(conf), EntryType.CONF_CHANGE)])
            self._conf_appended(Index(last + 1), conf)
        else:
            self.log.append([Entry(self.term, Index(last + 1), b"", EntryType.NOOP)])
        self._need_bcast = True
        self._events.append(f"became leader at term {self.term} with votes from {','.join(map(str, granted))}")

    # ======================================================================================================
    # Ticks
    # ======================================================================================================

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            if self._may_campaign():
                self._campaign(transfer=False)
            elif self.leader != NO_NODE:
                # A node that may not campaign (a learner, a removed node) must still let its lease lapse:
                # else, with its timer restarting, it would keep ignoring vote requests as if it had just heard
                # from the leader, and a candidate that needs its vote could never get it (sim seed 941).
                self._events.append(f"no word from leader {self.leader} within an election timeout")
                self.leader = NO_NODE

    def _tick_heartbeat(self) -> None:
        if self._commit_dirty:
            self._commit_due = True  # lazy_commit: a tick passed and no append carried the new commit index
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self._cfg.election_ticks:
            self.election_elapsed = 0
            if self._cfg.check_quorum and not self._quorum_active():
                active = sorted(v for v, pr in self.progress.items() if pr.recent_active)
                self._events.append(
                    f"stepping down at term {self.term}: no quorum heard from within an election timeout "
                    f"(active: {','.join(map(str, active))})"
                )
                self._become_follower(self.term, NO_NODE)
                return
            for v, pr in self.progress.items():
                pr.recent_active = v == self.id
            if self.lead_transferee != NO_NODE:
                self._events.append(f"leadership transfer to {self.lead_transferee} timed out")
                self.lead_transferee = NO_NODE
        for pr in self.progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                # A follower that received the whole file may take seconds to install a large store (1M keys:
                # ~2 s): asking again then streams the whole file a second time (bench/learner_join.py).
                patience = (20 if pr.snapshot_delivered else 3) * self._cfg.election_ticks
                if pr.snapshot_ticks >= patience:
                    # No acknowledgement: the snapshot (or its answer) was lost. Probe again, resend if needed.
                    pr.pending_snapshot = Index(0)
                    pr.become_probe()
        if self.heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        votes = {v: pr.recent_active for v, pr in self.progress.items()}
        return vote_result(self.voters, votes) is VoteResult.WON

    def _in_lease(self) -> bool:
        """We heard from a leader within the minimum election timeout (it is very likely still alive)."""
        return self.leader != NO_NODE and self.election_elapsed < self._cfg.election_ticks

    # ======================================================================================================
    # Elections
    # ======================================================================================================

    def _may_campaign(self) -> bool:
        """A voter of its configuration campaigns; so does a node that an uncommitted change removed, if it
        voted in the configuration before (hashicorp/raft's rule: only a *committed* configuration without
        it keeps it out). Without that, a leader that appended its own removal and lost its quorum may be the
        only holder of the newest entries, which the other voters then never elect anyone over: the cluster
        would be stuck (found by simulator seed 143). It counts votes by its latest configuration, which
        does not include itself; the election-safety argument of single-server changes does not depend on
        who the candidate is. Learners never campaign."""
        if self.id in self.voters:
            return True
        if self.conf_index <= self.log.committed or not self._conf_log:
            return False
        return self.id in self._conf_before_latest().voters

    def _campaign(self, transfer: bool) -> None:
        if not self._may_campaign():
            return
        if self._cfg.pre_vote and not transfer:
            self._become_pre_candidate()
            self._events.append(f"election timeout: starting pre-vote for term {self.term + 1}")
            self._request_votes(Term(self.term + 1), pre_vote=True, transfer=False)
        else:
            self._become_candidate()
            why = "leadership transfer" if transfer else "election timeout"
            self._events.append(f"starting election at term {self.term} ({why})")
            self._request_votes(self.term, pre_vote=False, transfer=transfer)

    def _request_votes(self, vote_term: Term, pre_vote: bool, transfer: bool) -> None:
        self.votes[self.id] = True
        if self._tally_votes():
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for peer in self._electorate():
            if peer != self.id:
                self._send(RequestVote(vote_term, self.id, peer, last_index, last_term, pre_vote, transfer))

    def _electorate(self) -> tuple[NodeId, ...]:
        """Whose votes count: the voters (learners never vote, §4.2.1), unless the test-only hook says otherwise."""
        return self.voters + self.learners if self._unsafe_learners_vote else self.voters

    def _tally_votes(self) -> bool:
        """Act on the vote count; True if the round is decided."""
        result = vote_result(self._electorate(), self.votes)
        if result is VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                # The election timer keeps running from the start of the pre-vote round: the pre-vote's round
                # trip must not lengthen the wait before this node tries again if the election splits
                # (measured in docs/election-time.md: it cut the p99 election time at 150-175 ms by ~20%).
                elapsed, timeout = self.election_elapsed, self.randomized_election_timeout
                self._become_candidate()
                self.election_elapsed, self.randomized_election_timeout = elapsed, timeout
                self._events.append(f"pre-vote won: starting election at term {self.term}")
                self._request_votes(self.term, pre_vote=False, transfer=False)
            else:
                self._become_leader()
            return True
        if result is VoteResult.LOST:
            rejected = sorted(v for v, ok in self.votes.items() if not ok)
            what = "pre-vote" if self.role is Role.PRE_CANDIDATE else "election"
            self._events.append(f"lost {what} at term {self.term}: rejected by {','.join(map(str, rejected))}")
            self._become_follower(self.term, NO_NODE)
            return True
        return False

    def _outranked_by(self, msg: RequestVote) -> bool:
        """Whether the requester ranks above us: a more up-to-date log (§5.4.1), or an equal log and a higher id."""
        mine = (self.log.last_term(), self.log.last_index())
        theirs = (msg.last_term, msg.last_index)
        return theirs > mine or (theirs == mine and msg.src > self.id)

    def _handle_vote_request(self, msg: RequestVote) -> None:
        # §5.2: at most one vote per term (first come, first served), and none while a leader is known.
        can_vote = (
            self.vote == msg.src
            or (self.vote == NO_NODE and self.leader == NO_NODE)
            or (msg.pre_vote and msg.term > self.term)
        )
        # §5.4.1: only for a candidate whose log is at least as up to date as ours.
        if can_vote and self.log.is_up_to_date(msg.last_index, msg.last_term):
            # A granted pre-vote answers with the candidate's term so it is not mistaken for a newer term.
            reply = RequestVoteResponse(msg.term, self.id, msg.src, True, msg.pre_vote)
            if msg.pre_vote:
                self._send(reply)
                return
            self.election_elapsed = 0
            self.vote = msg.src
            self._events.append(f"granted vote to {msg.src} at term {self.term}")
            if self._unsafe_vote_early:
                self._msgs.append(reply)  # UNSAFE (test hook): the vote leaves before it is durable.
            else:
                self._send(reply)
            return
        self._send(RequestVoteResponse(self.term, self.id, msg.src, False, msg.pre_vote))

    def _answer_stale(self, msg: Message) -> None:
        """A message from an older term (§5.1): never act on it; answer only where that helps liveness."""
        if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)):
            # A node may sit at a higher term than a live leader without ever campaigning to depose it: it won
            # a pre-vote but lost the election, or it is a learner or a removed node whose term a stale
            # candidate raised. Telling the leader our term makes it step down, so the cluster converges on
            # one term instead of this node ignoring the leader forever (Figure 2 always answers; a learner
            # stuck at a higher term was found by the simulator's membership runs).
            self._send(AppendEntriesResponse(self.term, self.id, msg.src, Index(0), reject=True))
        elif isinstance(msg, RequestVote):
            # Rejecting with our term lets a (pre-)candidate that lags behind catch up on the term (Figure 2).
            # Without it, a candidate whose one missing vote belongs to a node that keeps campaigning a term
            # ahead never learns that term, and asks at a stale one forever (sim seed 14 of the membership mix).
            self._send(RequestVoteResponse(self.term, self.id, msg.src, False, msg.pre_vote))

    # ======================================================================================================
    # Per-role step functions
    # ======================================================================================================

    def _step_follower(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries):
            self.election_elapsed = 0
            self.leader = msg.src
            self._handle_append_entries(msg)
        elif isinstance(msg, Heartbeat):
            self.election_elapsed = 0
            self.leader = msg.src
            self._handle_heartbeat(msg)
        elif isinstance(msg, InstallSnapshot):
            self.election_elapsed = 0
            self.leader = msg.src
            self._handle_snapshot(msg)
        elif isinstance(msg, TimeoutNow):
            self._events.append(f"received TimeoutNow from {msg.src} at term {self.term}")
            self._campaign(transfer=True)
        # Replies addressed to a former leader or candidate self at this term are stale: ignore them.

    def _step_candidate(self, msg: Message) -> None:
        if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)):
            # A leader exists at our term (§5.2: "the candidate recognizes the leader as legitimate").
            self._become_follower(self.term, msg.src)
            self._step_follower(msg)
        elif isinstance(msg, RequestVoteResponse):
            if msg.pre_vote != (self.role is Role.PRE_CANDIDATE):
                return  # a reply to the other kind of round: stale
            self.votes[msg.src] = msg.granted
            self._tally_votes()

    def _step_leader(self, msg: Message) -> None:
        if isinstance(msg, AppendEntriesResponse):
            self._handle_append_response(msg)
        elif isinstance(msg, HeartbeatResponse):
            pr = self.progress.get(msg.src)
            if pr is None:
                return
            pr.recent_active = True
            if msg.reject and msg.last_index < pr.match:
                self._events.append(
                    f"node {msg.src} lost its log (it holds up to {msg.last_index}, had acknowledged {pr.match}): "
                    "replicating to it again from there"
                )
                pr.match = msg.last_index
                pr.pending_snapshot = Index(0)
                pr.become_probe()
            rnd = self._read_round
            if rnd is not None and msg.context == rnd.ctx:
                rnd.acks.add(msg.src)
                self._maybe_finish_read_round()
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                # Appends may have been lost; free one slot so replication cannot stall forever.
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self._maybe_send_append(msg.src, send_if_empty=True)
        elif isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)):
            invariant(False, f"two leaders at term {self.term}: {self.id} and {msg.src}")
        self._maybe_step_down_removed()

    # ======================================================================================================
    # Replication: follower side
    # ======================================================================================================

    def _handle_append_entries(self, msg: AppendEntries) -> None:
        log = self.log
        if msg.prev_index < log.committed:
            # Everything up to our commit index is known to match (it is committed); say how far we are.
            self._send(AppendEntriesResponse(self.term, self.id, msg.src, log.committed))
            return
        last_new, truncated_from = log.maybe_append(msg.prev_index, msg.prev_term, msg.commit, msg.entries)
        if last_new is not None:
            self._track_conf(msg.entries, truncated_from)
            if truncated_from:
                self._events.append(
                    f"truncated conflicting entries from index {truncated_from} (leader {msg.src}, term {self.term})"
                )
            self._send(AppendEntriesResponse(self.term, self.id, msg.src, last_new))
            return
        # §5.3 consistency check failed; return a hint so the leader can skip a whole divergent term.
        hint_index = Index(min(msg.prev_index, log.last_index()))
        hint_index, hint_term = log.find_conflict_by_term(hint_index, msg.prev_term)
        self._send(AppendEntriesResponse(self.term, self.id, msg.src, msg.prev_index, True, hint_index, hint_term))

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        """§7 InstallSnapshot receiver."""
        meta = msg.meta
        log = self.log
        if meta.index <= log.committed:
            # Nothing new: we already hold (and committed) everything it covers.
            self._send(AppendEntriesResponse(self.term, self.id, msg.src, log.committed))
            return
        if log.match_term(meta.index, meta.term):
            # "If existing log entry has same index and term as snapshot's last included entry, retain log entries
            # following it": the snapshot only tells us that this prefix is committed.
            log.commit_to(meta.index)
            self._events.append(f"snapshot at {meta.index} from {msg.src} matches our log: commit advanced")
        else:
            self._events.append(
                f"installing snapshot at index {meta.index} (term {meta.term}) from leader {msg.src}; our log "
                f"ended at {log.last_index()}"
            )
            log.restore(meta)
            self._conf_restored(meta)
        self._send(AppendEntriesResponse(self.term, self.id, msg.src, meta.index))

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        meta = self.latest_snapshot
        invariant(
            meta.index >= self.log.first_index() - 1,
            f"node {to} needs entry {pr.next}, compacted away, but the newest snapshot is only at {meta.index}",
        )
        self._events.append(f"sending snapshot at index {meta.index} to {to} (it needs entry {pr.next})")
        self._send(InstallSnapshot(self.term, self.id, to, meta))
        pr.become_snapshot(meta.index)
        return True

    def _handle_heartbeat(self, msg: Heartbeat) -> None:
        # The leader caps the commit it sends at our match index, so our log holds and matches it — unless we
        # lost acknowledged entries (a wiped data dir): then say so, or the leader would never resend them.
        last = self.log.last_index()
        self.log.commit_to(Index(min(msg.commit, last)))
        lost = msg.commit > last
        self._send(HeartbeatResponse(self.term, self.id, msg.src, msg.context, lost, last if lost else Index(0)))

    # ======================================================================================================
    # Replication: leader side
    # ======================================================================================================

    def _handle_append_response(self, msg: AppendEntriesResponse) -> None:
        pr = self.progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        if msg.reject:
            next_probe = msg.hint_index
            if msg.hint_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(msg.hint_index, msg.hint_term)
            if pr.maybe_decr_to(msg.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(msg.src, send_if_empty=True)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(msg.index):
            return
        if pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()  # the follower installed the snapshot: resume with entries after it
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(msg.index)
        if self._maybe_commit():
            self._commit_moved()
        elif was_paused:
            self._maybe_send_append(msg.src, send_if_empty=True)
        while self._maybe_send_append(msg.src, send_if_empty=False):
            pass
        if msg.src == self.lead_transferee and pr.match == self.log.last_index():
            self._events.append(f"node {msg.src} caught up: sending TimeoutNow")
            self._send(TimeoutNow(self.term, self.id, msg.src))

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum durably holds, if that entry is from this term.

        §5.4.2 (Figure 8): an entry from an earlier term is never committed by counting its replicas; it is
        committed indirectly, once an entry of the current term after it is.
        """
        match = {v: pr.match for v, pr in self.progress.items()}
        index = committed_index(self.voters, match)
        if index <= self.log.committed:
            return False
        if self.log.term_or_none(index) != self.term and not self._unsafe_commit_old:
            return False
        pending = self.conf_index > self.log.committed
        moved = self.log.commit_to(index)
        if moved and pending and self.log.committed >= self.conf_index:
            self._use_conf(self.conf)  # the change committed: stop replicating to the members it removed
        if moved and self._reads_waiting and self._read_round is None:
            self._maybe_start_read_round()  # reads were waiting for this term's first commit
        return moved

    def _maybe_send_append(self, to: NodeId, send_if_empty: bool) -> bool:
        """Send the next AppendEntries to ``to`` if its flow control allows; False if nothing was sent (also
        when ``to`` is no longer replicated to: a committed change removed it)."""
        pr = self.progress.get(to)
        if pr is None or pr.is_paused():
            return False
        log = self.log
        prev_index = Index(pr.next - 1)
        prev_term = log.term_or_none(prev_index)
        if prev_term is None:
            # The entries this follower needs were compacted away: it gets the snapshot instead (§7).
            return self._send_snapshot(to, pr)
        last = log.last_index()
        entries: list[Entry] = []
        if pr.next <= last:
            hi = Index(min(last + 1, pr.next + self._cfg.max_msg_entries))
            entries = log.entries(pr.next, hi, self._cfg.max_msg_bytes)
        if not entries and not send_if_empty:
            return False
        commit = log.committed
        self._send(AppendEntries(self.term, self.id, to, prev_index, prev_term, tuple(entries), commit))
        pr.sent_entries(Index(prev_index + len(entries)), len(entries), sum(e.size_bytes() for e in entries))
        return True

    def _flush_appends(self) -> None:
        """Send proposals accumulated since the last ``ready()``, and a changed commit index, to followers."""
        if self.role is not Role.LEADER or not (self._need_bcast or self._commit_due):
            return
        send_if_empty = self._commit_due
        for peer in self.peers:
            sent = self._maybe_send_append(peer, send_if_empty)
            while sent and self._maybe_send_append(peer, send_if_empty=False):
                pass
        # Every append sent here carries the current commit index. A follower that got none (paused by flow
        # control, or probing) learns it from the next heartbeat, which carries min(match, commit).
        self._need_bcast = False
        self._commit_dirty = False
        self._commit_due = False

    def _commit_moved(self) -> None:
        self._commit_dirty = True
        if not self._cfg.lazy_commit:
            self._commit_due = True

    def _maybe_start_read_round(self) -> None:
        """Start a ReadIndex round for the waiting reads, unless one is in flight (§6.4).

        A read must not join a round already in flight: that round recorded its commit index before the read
        arrived, and a write acknowledged in between would be missed. It waits for the next round instead.
        """
        if self._read_round is not None or not self._reads_waiting:
            return
        # §6.4 step 1: until the leader commits an entry of its own term (its no-op), its commit index may lag
        # behind entries that earlier leaders committed.
        if self.log.term_or_none(self.log.committed) != self.term:
            return
        self._read_rounds += 1
        rnd = _ReadRound(self._read_rounds.to_bytes(8, "big"), self.log.committed, self._reads_waiting, {self.id})
        self._reads_waiting = []
        self._read_round = rnd
        if self._unsafe_read_early:
            rnd.acks.update(self.voters)  # UNSAFE (test hook): no confirmation that we still lead
        else:
            # §6.4 step 2: confirm leadership with a fresh heartbeat round; followers echo the context.
            committed = self.log.committed
            for peer in self.peers:
                pr = self.progress[peer]
                self._send(Heartbeat(self.term, self.id, peer, Index(min(pr.match, committed)), rnd.ctx))
        self._maybe_finish_read_round()

    def _maybe_finish_read_round(self) -> None:
        rnd = self._read_round
        if rnd is None or vote_result(self.voters, dict.fromkeys(rnd.acks, True)) is not VoteResult.WON:
            return
        self._read_states.extend(ReadState(rnd.index, ctx) for ctx in rnd.reads)
        self._read_round = None
        self._maybe_start_read_round()

    def _bcast_heartbeat(self) -> None:
        committed = self.log.committed
        # Periodic heartbeats carry the pending ReadIndex round's context, so a round whose own heartbeats were
        # lost still completes (replies to any heartbeat sent after the round began confirm leadership for it).
        ctx = self._read_round.ctx if self._read_round is not None else b""
        for peer in self.peers:
            pr = self.progress[peer]
            self._send(Heartbeat(self.term, self.id, peer, Index(min(pr.match, committed)), ctx))

    # ======================================================================================================
    # Helpers
    # ======================================================================================================

    def _send(self, msg: Message) -> None:
        # Only the leader's replication traffic may leave before this node's pending write is durable
        # (§10.2.1); everything else promises something about our disk (a vote, an ack, a new term).
        if self.role is Role.LEADER and isinstance(msg, (AppendEntries, Heartbeat, TimeoutNow, InstallSnapshot)):
            self._msgs.append(msg)
        else:
            self._msgs_after_sync.append(msg)

    def _hard_state(self) -> HardState:
        if self._unsafe_forget_vote:
            return HardState(self.term, NO_NODE, self.log.committed)  # UNSAFE (test hook)
        return HardState(self.term, self.vote, self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(self.role, self.leader, self.term)
