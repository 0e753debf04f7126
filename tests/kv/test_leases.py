"""Leases in the state machine (etcd's): grant, attach by put, revoke deletes the keys, compare on a key's lease,
and the lease table in snapshots. Over both backends. (When a lease expires is the leader's business:
raftkv.kv.lessor and its tests.)"""

from __future__ import annotations

from collections.abc import Callable

from raftkv.kv import FROM_KEY, Backend, Compare, DeleteRange, ErrorCode, KeyValue, KVStateMachine, Put, Range, Txn
from raftkv.kv.backend import LeaseRecord
from raftkv.kv.commands import (
    ErrorResult,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    OpenSession,
    PutResult,
    Request,
    TxnResult,
)
from raftkv.kv.watch import EventType
from tests.kv.kvtestlib import Feeder


def _keys(sm: KVStateMachine) -> list[bytes]:
    return [kv.key for kv in sm.read(Range(b"\0", FROM_KEY)).kvs]  # type: ignore[union-attr]


def test_grant_picks_the_entry_index_or_the_asked_id_and_refuses_a_duplicate(sm: KVStateMachine, feed: Feeder) -> None:
    feed(Put(b"x", b"1"))
    granted = feed.one(LeaseGrant(30))
    assert granted == LeaseGrantResult(feed.next_index - 1, 30, 1), "id = the command's log index; revision kept"
    assert feed.one(LeaseGrant(10, id=7)) == LeaseGrantResult(7, 10, 1)
    dup = feed.one(LeaseGrant(10, id=7))
    assert (
        isinstance(dup, ErrorResult) and dup.code == ErrorCode.LEASE_EXISTS and "lease 7 already exists" in dup.message
    )
    with sm.backend.read() as view:
        assert view.leases() == [LeaseRecord(granted.id, 30), LeaseRecord(7, 10)]  # type: ignore[union-attr]


def test_revoking_deletes_the_attached_keys_at_one_revision(sm: KVStateMachine, feed: Feeder) -> None:
    live: list[object] = []
    sm.watch.add_listener(live.extend)
    feed(LeaseGrant(60, id=5), LeaseGrant(60, id=6))
    feed(Put(b"svc/a", b"1", lease=5), Put(b"svc/b", b"1", lease=5), Put(b"svc/c", b"1", lease=6), Put(b"plain", b"1"))
    assert sm.get(b"svc/a") == KeyValue(b"svc/a", b"1", 1, 1, 1, 5)
    feed(Put(b"svc/b", b"2"))  # a put without a lease detaches the key (etcd)
    with sm.backend.read() as view:
        assert view.lease_keys(5) == [b"svc/a"] and view.lease_keys(6) == [b"svc/c"]
    assert feed.one(LeaseRevoke(5)) == LeaseRevokeResult(6, 1)
    assert _keys(sm) == [b"plain", b"svc/b", b"svc/c"]
    deletes = [e for e in live if e.type == EventType.DELETE]  # type: ignore[attr-defined]
    assert [(e.kv.key, e.kv.mod_revision, e.prev_kv.lease) for e in deletes] == [(b"svc/a", 6, 5)]  # type: ignore[attr-defined]
    gone = feed.one(LeaseRevoke(5))
    assert isinstance(gone, ErrorResult) and gone.code == ErrorCode.LEASE_NOT_FOUND
    # A lease without keys: revoking it changes no revision.
    feed(DeleteRange(b"svc/c"))
    with sm.backend.read() as view:
        assert view.lease_keys(6) == []
    assert feed.one(LeaseRevoke(6, expired=True)) == LeaseRevokeResult(7, 0)
    with sm.backend.read() as view:
        assert view.leases() == []


def test_a_put_to_a_missing_lease_changes_nothing(sm: KVStateMachine, feed: Feeder) -> None:
    refused = feed.one(Put(b"k", b"v", lease=99))
    assert isinstance(refused, ErrorResult) and refused.code == ErrorCode.LEASE_NOT_FOUND
    assert "lease 99 not found" in refused.message and sm.revision == 0 and sm.get(b"k") is None
    feed(LeaseGrant(10, id=1))
    txn = feed.one(Txn(success=[Put(b"a", b"1"), Put(b"b", b"1", lease=99)]))
    assert isinstance(txn, ErrorResult) and txn.code == ErrorCode.LEASE_NOT_FOUND, "the whole txn fails (etcd)"
    assert sm.get(b"a") is None and sm.revision == 0


def test_compare_on_a_keys_lease(sm: KVStateMachine, feed: Feeder) -> None:
    feed(LeaseGrant(10, id=3), Put(b"lock", b"me", lease=3))
    held = feed.one(Txn([Compare(b"lock", "lease", "=", 3)], [Put(b"ok", b"1")]))
    assert isinstance(held, TxnResult) and held.succeeded
    missing = feed.one(Txn([Compare(b"nothing", "lease", "=", 0)], [Put(b"ok", b"2")]))
    assert isinstance(missing, TxnResult) and missing.succeeded, "a missing key's lease is 0 (etcd)"


def test_leases_and_their_keys_survive_a_snapshot(
    sm: KVStateMachine, feed: Feeder, make_backend: Callable[[], Backend]
) -> None:
    feed(LeaseGrant(10, id=1), LeaseGrant(20, id=2), Put(b"a", b"1", lease=1), Put(b"b", b"1", lease=2))
    feed(Put(b"a", b"2", lease=2), Put(b"c", b"1", lease=1), DeleteRange(b"c"))
    image = sm.snapshot()
    other = KVStateMachine(make_backend())
    other.restore(image)
    with other.backend.read() as view:
        assert view.leases() == [LeaseRecord(1, 10), LeaseRecord(2, 20)]
        assert view.lease_keys(1) == [] and view.lease_keys(2) == [b"a", b"b"]
    assert other.snapshot() == image
    revoked = Feeder(other)
    assert revoked.one(LeaseRevoke(2)) == LeaseRevokeResult(6, 2)
    assert _keys(other) == []


def test_a_grant_and_a_revoke_in_a_session_are_applied_once(sm: KVStateMachine, feed: Feeder) -> None:
    (opened,) = feed(OpenSession(ttl_ms=10_000))
    sid = opened.session_id  # type: ignore[union-attr]
    first = feed.one(Request(sid, 1, 0, LeaseGrant(5)))
    assert isinstance(first, LeaseGrantResult)
    assert feed.one(Request(sid, 1, 0, LeaseGrant(5))) == first, "a retry gets the same lease, not a second one"
    assert isinstance(feed.one(Request(sid, 2, 0, Put(b"k", b"v", lease=first.id))), PutResult)
    assert feed.one(Request(sid, 3, 0, LeaseRevoke(first.id))) == LeaseRevokeResult(2, 1)
    assert feed.one(Request(sid, 3, 0, LeaseRevoke(first.id))) == LeaseRevokeResult(2, 1), "not 'not found'"
