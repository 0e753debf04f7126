"""The auth store's rules and checks (raftkv.kv.auth), and the state machine's second check at apply time."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from raftkv.kv import FROM_KEY, Backend, Compare, DeleteRange, ErrorCode, KVStateMachine, Put, Range, Txn
from raftkv.kv.auth import AuthStore, covers, interval, merge
from raftkv.kv.commands import (
    AuthDisable,
    Authed,
    AuthEnable,
    AuthResult,
    CloseSession,
    Compact,
    ErrorResult,
    Internal,
    KeepAlive,
    LeaseGrant,
    LeaseRevoke,
    LeaseRevokeResult,
    OpenSession,
    Permission,
    PutResult,
    Request,
    RoleAdd,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
    SessionResult,
    TxnResult,
    UserAdd,
    UserChangePassword,
    UserDelete,
    UserGrantRole,
    UserRevokeRole,
)
from raftkv.kv.keys import key_in_range
from tests.kv.kvtestlib import Feeder

HASH = "scrypt$16384$8$1$c2FsdA$aGFzaA"  # the store never looks inside a hash


def _code(result: object) -> ErrorCode | None:
    return result.code if isinstance(result, ErrorResult) else None


def _enabled(feed: Feeder) -> None:
    """root (role root), alice (role reader: read a/ prefix, readwrite b), auth on."""
    results = feed(
        UserAdd("root", password_hash=HASH),
        UserGrantRole("root", "root"),
        UserAdd("alice", password_hash=HASH),
        RoleAdd("reader"),
        RoleGrantPermission("reader", Permission("read", b"a/", b"a0")),
        RoleGrantPermission("reader", Permission("readwrite", b"b")),
        UserGrantRole("alice", "reader"),
        AuthEnable(b"secret"),
    )
    assert all(isinstance(r, AuthResult) for r in results), results


# --- intervals ---------------------------------------------------------------------------------------------

_KEYS = st.lists(st.sampled_from([b"a", b"b", b"\0", b"\xff"]), max_size=3).map(b"".join)
_RANGE = st.tuples(_KEYS, st.one_of(st.none(), st.just(FROM_KEY), _KEYS)).filter(
    lambda r: bool(r[0]) or bool(r[1])  # a single key (no range_end, or b"") is never empty (keys.py)
)


@given(perms=st.lists(_RANGE, max_size=5), wanted=_RANGE, probes=st.lists(_KEYS.filter(bool), max_size=30))
def test_coverage_of_merged_intervals_agrees_with_key_by_key_membership(
    perms: list[tuple[bytes, bytes | None]], wanted: tuple[bytes, bytes | None], probes: list[bytes]
) -> None:
    merged = merge(interval(k, e) for k, e in perms)
    for (_s1, e1), (s2, _e2) in itertools.pairwise(merged):
        assert e1 is not None and e1 < s2, f"merged intervals overlap or touch: {merged}"
    key, end = wanted
    if covers(merged, interval(key, end)):
        # Every key of the wanted range (among the probes, and its bounds) is in some permission.
        for probe in [*probes, key] if key else probes:
            if key_in_range(probe, key, end):
                assert any(key_in_range(probe, k, e) for k, e in perms), (probe, perms, wanted)
    elif not end:
        # Not covered, a single key: it is in no permission.
        assert not any(key_in_range(key, k, e) for k, e in perms), (perms, wanted)


def test_coverage_needs_the_union_of_adjacent_permissions() -> None:
    merged = merge([interval(b"a", b"c"), interval(b"c", b"e"), interval(b"x", FROM_KEY)])
    assert merged == [(b"a", b"e"), (b"x", None)]
    assert covers(merged, interval(b"b", b"d"))
    assert not covers(merged, interval(b"b", b"f"))
    assert covers(merged, interval(b"y", FROM_KEY))
    assert not covers(merged, interval(b"e", None))
    assert not covers(merged, interval(b"w", FROM_KEY))


# --- the rules of changes -------------------------------------------------------------------------------------


def test_enable_needs_the_root_user_with_the_root_role(feed: Feeder) -> None:
    assert _code(feed.one(AuthEnable(b"s"))) == ErrorCode.ROOT_USER_NOT_EXIST
    feed(UserAdd("root", password_hash=HASH))
    assert _code(feed.one(AuthEnable(b"s"))) == ErrorCode.ROOT_ROLE_NOT_EXIST
    assert isinstance(feed.one(UserGrantRole("root", "root")), AuthResult), "root is granted without being created"
    assert isinstance(feed.one(AuthEnable(b"s")), AuthResult)
    assert feed.sm.auth.enabled and feed.sm.auth.secret == b"s"


def test_nobody_can_lock_root_out_while_auth_is_on(feed: Feeder) -> None:
    _enabled(feed)
    for change in (UserDelete("root"), UserRevokeRole("root", "root")):
        assert _code(feed.one(Authed("root", change))) == ErrorCode.INVALID_AUTH_MGMT, change
    feed(Authed("root", RoleAdd("root")))
    assert _code(feed.one(Authed("root", RoleDelete("root")))) == ErrorCode.INVALID_AUTH_MGMT
    assert feed.sm.auth.is_root("root")


def test_etcds_error_cases_of_changes(feed: Feeder) -> None:
    assert _code(feed.one(UserAdd("bob"))) == ErrorCode.INVALID_COMMAND, "neither a password nor no_password"
    assert _code(feed.one(UserAdd("bob", password="clear"))) == ErrorCode.INVALID_COMMAND, "a clear password"
    assert _code(feed.one(UserChangePassword("bob", password="x"))) == ErrorCode.INVALID_COMMAND
    feed(UserAdd("bob", no_password=True))
    assert _code(feed.one(UserAdd("bob", password_hash=HASH))) == ErrorCode.USER_EXISTS
    assert _code(feed.one(UserGrantRole("bob", "nope"))) == ErrorCode.ROLE_NOT_FOUND
    assert _code(feed.one(UserGrantRole("eve", "root"))) == ErrorCode.USER_NOT_FOUND
    assert _code(feed.one(UserRevokeRole("bob", "root"))) == ErrorCode.ROLE_NOT_GRANTED
    feed(RoleAdd("r"))
    assert _code(feed.one(RoleAdd("r"))) == ErrorCode.ROLE_EXISTS
    assert _code(feed.one(RoleRevokePermission("r", b"k"))) == ErrorCode.PERMISSION_NOT_GRANTED
    assert _code(feed.one(UserDelete("eve"))) == ErrorCode.USER_NOT_FOUND
    assert feed.sm.auth.revision == 2, "only the two successful changes counted"


def test_a_grant_on_the_same_range_replaces_its_type_and_a_role_delete_leaves_no_user_with_it(feed: Feeder) -> None:
    feed(RoleAdd("r"), UserAdd("bob", password_hash=HASH), UserGrantRole("bob", "r"))
    feed(RoleGrantPermission("r", Permission("read", b"k")), RoleGrantPermission("r", Permission("write", b"k")))
    assert feed.sm.auth.roles["r"].permissions == (Permission("write", b"k"),)
    feed(RoleDelete("r"))
    assert feed.sm.auth.users["bob"].roles == ()


def test_a_password_change_moves_the_users_since_so_old_tokens_die(feed: Feeder) -> None:
    feed(UserAdd("bob", password_hash=HASH))
    before = feed.sm.auth.users["bob"].since
    feed(UserChangePassword("bob", password_hash=HASH + "x"))
    assert feed.sm.auth.users["bob"].since > before


# --- checks ---------------------------------------------------------------------------------------------------


def test_what_a_reader_may_and_may_not_do(feed: Feeder) -> None:
    _enabled(feed)
    store: AuthStore = feed.sm.auth
    none: Callable[[int], list[bytes]] = lambda _lease: []  # noqa: E731

    def why(command: object) -> ErrorCode | None:
        return _code(store.check("alice", command, none))  # type: ignore[arg-type]

    assert why(Range(b"a/x")) is None
    assert why(Range(b"a/", b"a0")) is None
    assert why(Range(b"a/", b"a1")) == ErrorCode.PERMISSION_DENIED, "a range wider than the permission"
    assert why(Put(b"a/x", b"v")) == ErrorCode.PERMISSION_DENIED, "read only"
    assert why(Put(b"b", b"v")) is None
    assert why(Put(b"c", b"v")) == ErrorCode.PERMISSION_DENIED
    assert why(DeleteRange(b"b")) is None
    assert why(Txn([Compare(b"a/x", "version", "=", 0)], [Put(b"b", b"1")])) is None
    assert why(Txn([Compare(b"c", "version", "=", 0)], [Put(b"b", b"1")])) == ErrorCode.PERMISSION_DENIED
    assert why(Txn([], [Put(b"b", b"1")], [Put(b"c", b"1")])) == ErrorCode.PERMISSION_DENIED, "both branches"
    assert why(Request(1, 1, 0, Put(b"c", b"1"))) == ErrorCode.PERMISSION_DENIED, "the op inside a session"
    assert why(Compact(1)) == ErrorCode.PERMISSION_DENIED, "root only"
    assert why(RoleAdd("x")) == ErrorCode.PERMISSION_DENIED, "root only"
    assert why(LeaseGrant(10)) is None
    assert _code(store.check("alice", LeaseRevoke(1), lambda _l: [b"b", b"c"])) == ErrorCode.PERMISSION_DENIED
    assert _code(store.check("", Range(b"a/x"), none)) == ErrorCode.USER_EMPTY
    assert _code(store.check("eve", Range(b"a/x"), none)) == ErrorCode.PERMISSION_DENIED
    assert store.check("root", Compact(1), none) is None


def test_a_write_checked_before_a_revoke_is_refused_when_applied_after_it(feed: Feeder) -> None:
    """The second check: a leader that had not applied the revoke admitted the write; every replica refuses it."""
    _enabled(feed)
    assert isinstance(feed.one(Authed("alice", Put(b"b", b"1"))), PutResult)
    revision = feed.sm.revision
    results = feed(
        Authed("root", RoleRevokePermission("reader", b"b")),
        Authed("alice", Put(b"b", b"2")),
    )
    assert isinstance(results[0], AuthResult)
    assert _code(results[1]) == ErrorCode.PERMISSION_DENIED
    kept = feed.sm.get(b"b")
    assert feed.sm.revision == revision and kept is not None and kept.value == b"1"


def test_an_authed_command_after_auth_is_disabled_runs_and_an_anonymous_one_is_refused_while_on(
    feed: Feeder,
) -> None:
    _enabled(feed)
    assert _code(feed.one(Authed("", Put(b"b", b"1")))) == ErrorCode.USER_EMPTY
    feed(Authed("root", AuthDisable()))
    assert isinstance(feed.one(Authed("", Put(b"c", b"1"))), PutResult)


def test_the_auth_store_survives_a_snapshot_and_a_reopen(
    sm: KVStateMachine, feed: Feeder, make_backend: Callable[[], Backend]
) -> None:
    _enabled(feed)
    image = sm.snapshot()
    other = KVStateMachine(make_backend())
    other.restore(image)
    assert other.auth.state() == sm.auth.state()
    assert other.snapshot() == image
    reopened = KVStateMachine(sm.backend)  # what a restart reads back
    assert reopened.auth.state() == sm.auth.state() and reopened.auth.enabled


def test_a_session_serves_only_its_owner_while_auth_is_on(feed: Feeder) -> None:
    """Found by review: session ids are log indexes, easy to guess; another user must neither read the results a
    session keeps nor spend its sequence numbers."""
    _enabled(feed)
    opened = feed.one(Authed("alice", OpenSession(60_000, time_ms=1)))
    assert isinstance(opened, SessionResult)
    sid = opened.session_id
    secret_read = Txn([], [Range(b"a/secret")], [])
    assert isinstance(feed.one(Authed("root", Put(b"a/secret", b"TOPSECRET"))), PutResult)
    kept = feed.one(Authed("alice", Request(sid, 1, 2, secret_read)))
    assert isinstance(kept, TxnResult)
    for theft in (
        Request(sid, 1, 3, Put(b"b", b"x")),  # a retry of seq 1 would answer alice's kept result
        Request(sid, 2, 3, Put(b"b", b"x")),  # and seq 2 would be spent for her
        KeepAlive(sid, 3),
        CloseSession(sid, 3),
    ):
        result = feed.one(Authed("root" if isinstance(theft, CloseSession) else "alice2", theft))
        assert _code(result) in (ErrorCode.SESSION_EXPIRED, ErrorCode.PERMISSION_DENIED), (theft, result)
        assert "TOPSECRET" not in repr(result)
    assert isinstance(feed.one(Authed("alice", Request(sid, 2, 4, Put(b"b", b"mine")))), PutResult), "hers still"


def test_a_command_on_nobodys_behalf_is_refused_while_auth_is_on_but_a_nodes_own_is_not(feed: Feeder) -> None:
    """Found by review: a leader that had not applied the enable proposed bare commands, applied unchecked."""
    feed(LeaseGrant(10, id=7))
    _enabled(feed)
    for bare in (Put(b"b", b"1"), UserGrantRole("alice", "root"), AuthDisable()):
        assert _code(feed.one(bare)) == ErrorCode.USER_EMPTY, bare
    assert feed.sm.auth.enabled and not feed.sm.auth.is_root("alice")
    assert isinstance(feed.one(Internal(LeaseRevoke(7, expired=True))), LeaseRevokeResult)


def test_all_keys_from_the_empty_key_and_a_second_enable(feed: Feeder) -> None:
    _enabled(feed)
    feed(Authed("root", RoleGrantPermission("reader", Permission("read", b"\0", FROM_KEY))))  # etcd's "all keys"
    none: Callable[[int], list[bytes]] = lambda _lease: []  # noqa: E731
    assert feed.sm.auth.check("alice", Range(b"", FROM_KEY), none) is None
    secret, revision = feed.sm.auth.secret, feed.sm.auth.revision
    assert isinstance(feed.one(Authed("root", AuthEnable(b"other"))), AuthResult)
    assert (feed.sm.auth.secret, feed.sm.auth.revision) == (secret, revision), "etcd: enabling again is a no-op"
