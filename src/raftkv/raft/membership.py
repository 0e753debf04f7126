"""Cluster membership: who votes, who only learns, and how the configuration changes (dissertation ch. 4).

Theory of operation
-------------------
A configuration (:class:`ConfState`) is the list of members, each a voter or a learner, with the addresses the
runtime dials (hashicorp/raft's ``Server{ID, Address, Suffrage}``: the log is the address book). The core only
looks at ids and suffrage; the addresses ride along opaque.

**Single-server changes** (dissertation §4.1), not joint consensus (§4.3): each change adds, promotes or removes
one member, so any majority of the old voters and any majority of the new ones intersect, and no joint phase is
needed. Replacing a machine is two changes (remove the dead one, add the new one as a learner, promote it),
each safe on its own. We chose this because it is the rule with the smaller proof and the smaller code: the
configuration is one value, not a pair, and there is no second entry to leave a joint state. It needs two
rules, both enforced by :meth:`~raftkv.raft.node.RawNode.propose_conf_change`:

* **one change at a time**: a new change is refused while the last configuration entry is not committed;
* **commit in term first**: a leader proposes a change only once it has committed an entry of its own term
  (its no-op). Without it, two leaders of successive terms can each append a change the other never saw and
  commit both with disjoint majorities (the bug Ongaro published on raft-dev in 2015).

**A configuration takes effect when appended** (dissertation §4.1; hashicorp), not when applied (etcd): every
server uses the latest configuration entry in its log, committed or not, and goes back to the previous one if
that entry is truncated away. So the rules above can be checked against the log alone, and the simulator
checks, after every step, that each node's configuration is exactly the one its log implies.

Every configuration entry holds the *whole* new configuration, not a delta: reading one entry tells a node
the configuration, and a node that starts from an empty log learns it from the first configuration entry the
leader sends it. A cluster's first leader writes its (bootstrap) configuration as its first entry, in place of
the no-op, so the configuration is in the log from the first term on.

Learners receive the log and never vote, never campaign and never count toward a commit or a read quorum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import Enum

from raftkv.raft.errors import RaftError
from raftkv.raft.types import EMPTY_CONF, ConfState, Member, NodeId

__all__ = [
    "EMPTY_CONF",
    "ChangeType",
    "ConfChange",
    "ConfChangeInProgress",
    "ConfState",
    "InvalidConfChange",
    "Member",
    "apply_change",
    "decode_conf",
    "encode_conf",
]


class InvalidConfChange(RaftError, ValueError):
    """A membership change that is not valid for the current configuration; nothing was changed.

    The message is one line naming what was wrong (an id already a member, an unknown id, the last voter...).
    """


class ConfChangeInProgress(RaftError):
    """A membership change cannot start yet: the previous one is not committed, or the leader has not yet
    committed an entry of its own term. Retry shortly; nothing was changed."""


class ChangeType(Enum):
    ADD_VOTER = "add-voter"
    """Add a new member that votes at once (it holds no log yet: until it catches up it cannot help commit,
    which is why ``ADD_LEARNER`` then ``PROMOTE`` is the recommended way, dissertation §4.2.1)."""
    ADD_LEARNER = "add-learner"
    PROMOTE = "promote"
    """Make a learner a voter."""
    REMOVE = "remove"
    UPDATE = "update"
    """Change a member's addresses (its suffrage stays)."""


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server membership change, as a user asks for it."""

    type: ChangeType
    node: NodeId
    peer_address: str = ""
    client_address: str = ""


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after ``cc``; raises :class:`InvalidConfChange` (one line) if it cannot apply.

    Pure validation of the change against the configuration; the rules about *when* a change may be proposed
    (one at a time, commit in term) live in the node.
    """
    node = cc.node
    if node <= 0:
        raise InvalidConfChange(f"member ids are positive integers, got {node}")
    current = conf.member(node)
    if cc.type in (ChangeType.ADD_VOTER, ChangeType.ADD_LEARNER):
        if current is not None:
            what = "a learner" if current.learner else "a voter"
            raise InvalidConfChange(f"node {node} is already a member ({what})")
        if not cc.peer_address:
            raise InvalidConfChange(f"node {node} needs a peer address to be added")
        _check_addresses_free(conf, node, cc.peer_address, cc.client_address)
        return conf.with_member(
            Member(node, cc.peer_address, cc.client_address, learner=cc.type is ChangeType.ADD_LEARNER)
        )
    if current is None:
        raise InvalidConfChange(f"node {node} is not a member (members: {','.join(map(str, conf.ids)) or 'none'})")
    if cc.type is ChangeType.PROMOTE:
        if not current.learner:
            raise InvalidConfChange(f"node {node} is already a voter")
        return conf.with_member(replace(current, learner=False))
    if cc.type is ChangeType.REMOVE:
        if not current.learner and conf.voters == (node,):
            raise InvalidConfChange(f"node {node} is the last voter: a cluster needs at least one")
        return conf.without(node)
    # UPDATE
    peer = cc.peer_address or current.peer_address
    client = cc.client_address or current.client_address
    _check_addresses_free(conf, node, peer, client)
    return conf.with_member(replace(current, peer_address=peer, client_address=client))


def _check_addresses_free(conf: ConfState, node: NodeId, peer: str, client: str) -> None:
    for m in conf.members:
        if m.id == node:
            continue
        used = {a for a in (m.peer_address, m.client_address) if a}
        for addr in (peer, client):
            if addr and addr in used:
                raise InvalidConfChange(f"address {addr} is already used by node {m.id}")


# --- the encoding inside a CONF_CHANGE entry ------------------------------------------------------------------
# JSON: membership changes are rare, and a human reading a WAL dump sees the configuration as it is.

CONF_FORMAT = 1


def encode_conf(conf: ConfState) -> bytes:
    members = [
        {"id": int(m.id), "peer": m.peer_address, "client": m.client_address, "learner": m.learner}
        for m in conf.members
    ]
    return json.dumps({"v": CONF_FORMAT, "members": members}, separators=(",", ":")).encode()


def decode_conf(data: bytes | memoryview) -> ConfState:
    """The configuration in a CONF_CHANGE entry; raises :class:`InvalidConfChange` if it is not one."""
    try:
        doc = json.loads(bytes(data))
        if not isinstance(doc, dict) or doc.get("v") != CONF_FORMAT:
            raise InvalidConfChange(f"not a version {CONF_FORMAT} configuration entry")
        return ConfState(
            tuple(
                Member(NodeId(int(m["id"])), str(m["peer"]), str(m["client"]), bool(m["learner"]))
                for m in doc["members"]
            )
        )
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, InvalidConfChange):
            raise
        raise InvalidConfChange(f"a damaged configuration entry: {e}") from e
