"""``raftkv.client``: the client of a raftkv cluster — ``Client`` (async), ``SyncClient`` (blocking), ``Watch``.

``async with raftkv.connect(["127.0.0.1:9001", ...]) as client: await client.put("k", "v")``; operator calls
(status, ping, the generic propose, backups) are on ``client.admin``.

Theory of operation
-------------------
**One connection class, one retry loop.** :class:`~raftkv.client.connection.Connection` is the client's only
connection to a node's client port; it dials through the transport's stream layer (the one seam where TLS will
plug in), and every call on it has a deadline. Every wire error code maps to one exception class of
:mod:`raftkv.errors` in one table (:mod:`raftkv.client.errors`); the client defines none of its own.
:class:`~raftkv.client.router.Router` holds one pooled connection per endpoint and the one retry loop that KV
batches, the generic propose and watches go through.

**Finding the leader.** The client starts with any endpoint; writes and linearizable reads that reach a follower
come back ``notLeader`` with the leader's client address, and the client follows it at once. Unreachable
endpoints (and answers whose outcome is unknown: ``timeout``, ``proposalDropped``, ``stopped``) are retried on
the next endpoint with a brisk backoff until the call's deadline; then the call raises ``Unavailable``.

**Coalescing.** Calls made in the same event-loop turn are sent together in one ``execute`` RPC (one capnp call
costs ~75 µs of CPU whatever it carries); serializable reads travel in their own batch, to any node.

**Exactly once.** Every write belongs to the client's session and carries a sequence number (dissertation §6.3).
When a batch fails in a way that leaves outcomes unknown (timeout, leader change, broken connection), the client
retries *the same batch*, with the same sequence numbers, elsewhere; the state machine answers a retried write
with its first result instead of applying it twice. The session is opened lazily through the log and kept alive
by the client's writes (a client idle for longer than the session TTL gets a new session on its next write).

**Watches.** ``client.watch(...)`` is an async iterator of events. The server pushes events to a capability the
client hosts, over a connection of the watch's own. If the serving node dies or stops answering (a ping every
second checks it), the watch resumes on another node from the last revision it delivered: no gap, no duplicate.
Its queue is bounded: a consumer that falls too far behind gets ``WatchCancelled`` (with the reason) after the
events already queued, instead of the client's memory growing without limit.

**Ownership.** Every task the client starts (batch sends, a watch's health check) belongs to a
:class:`~raftkv.tasks.TaskSet` and is cancelled and awaited on close; leaving ``connect()`` closes the client,
its watches and its connections.
"""

from __future__ import annotations

from raftkv.client.admin import Admin, MemberReport, StatusReport, download_backup
from raftkv.client.connection import Connection, explain
from raftkv.client.kv import Client, Lease, connect
from raftkv.client.recipes import Election, Lock, LockLost
from raftkv.client.sync import SyncClient, SyncElection, SyncLease, SyncLock, connect_sync
from raftkv.client.watch import Watch
from raftkv.errors import (
    Compacted,
    FutureRevision,
    InternalError,
    InvalidRequest,
    LeaseNotFound,
    NodeFailed,
    NotLeader,
    ProposalDropped,
    RaftError,
    SessionExpired,
    Timeout,
    TxnFailed,
    Unavailable,
    WatchCancelled,
    WrongCluster,
)

__all__ = [
    "Admin",
    "Client",
    "Compacted",
    "Connection",
    "Election",
    "FutureRevision",
    "InternalError",
    "InvalidRequest",
    "Lease",
    "LeaseNotFound",
    "Lock",
    "LockLost",
    "MemberReport",
    "NodeFailed",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "SessionExpired",
    "StatusReport",
    "SyncClient",
    "SyncElection",
    "SyncLease",
    "SyncLock",
    "Timeout",
    "TxnFailed",
    "Unavailable",
    "Watch",
    "WatchCancelled",
    "WrongCluster",
    "connect",
    "connect_sync",
    "download_backup",
    "explain",
]
