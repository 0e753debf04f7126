"""Users, roles and permissions (etcd v3's RBAC model): the replicated auth store and its rules, pure.

Theory of operation
-------------------
The auth store is part of the replicated state: its changes (:data:`~raftkv.kv.commands.AuthChange`: add a
user, grant a role a permission, enable authentication...) are log commands that every replica applies alike,
and :class:`AuthState` is stored with the data (one blob in the backend) and carried by snapshots. Nothing here
reads a clock or draws randomness: password hashes are computed, and the token-signing ``secret`` drawn, by the
node that proposes the command (``raftkv.kvserver.auth``), never by the state machine.

The model is etcd's:

* a **user** has a password (a salted scrypt hash; or none, for a user known only by its TLS client
  certificate) and **roles**;
* a **role** has **permissions**: ``read``, ``write`` or ``readwrite`` on a key, an interval ``[key,
  range_end)``, or every key from ``key`` on;
* the role ``root`` allows everything, and is the only one that may change the auth store, compact, change
  members or take a backup while authentication is on. Like etcd, it need not be created to be granted;
* ``auth enable`` needs the user ``root`` with the role ``root`` (so that someone can still administer the
  cluster), and while authentication is on that user, that grant and that role cannot be removed.

Checks, twice. A node checks each request against the auth store it has applied before proposing it (reads:
after their read barrier, so a linearizable read sees every change committed before it started), and proposes
each write as :class:`~raftkv.kv.commands.Authed` ``(user, command)``. The state machine checks it again when it
applies it (:meth:`AuthStore.check`), against the store as of that point of the log. So a permission revoked
at log index ``i`` is never exercised by an entry after ``i``, even one a lagging leader checked before it had
applied ``i``: every replica refuses it alike, as an ``ErrorResult(PERMISSION_DENIED)``.

A request covers a range; it is allowed when the union of the user's permissions of the right kind covers the
whole range (etcd merges the intervals the same way). Per user, the merged intervals are computed once and
kept until the next change of the store.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from raftkv.kv.commands import (
    AuthChange,
    AuthDisable,
    AuthEnable,
    AuthResult,
    CloseSession,
    Command,
    Compact,
    DeleteRange,
    ErrorResult,
    KeepAlive,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseLeases,
    LeaseRevoke,
    LeaseTimeToLive,
    OpenSession,
    Permission,
    Put,
    Range,
    Request,
    RoleAdd,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
    Txn,
    UserAdd,
    UserChangePassword,
    UserDelete,
    UserGrantRole,
    UserRevokeRole,
)
from raftkv.kv.errors import ErrorCode
from raftkv.kv.keys import FROM_KEY, is_single_key

ROOT: Final = "root"
"""The user that must exist, and the role that allows everything."""


class UserRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A user. ``since``: the auth revision of its last password change (or creation); a token names it, so a
    password change or a delete-and-add invalidates the tokens issued before."""

    name: str
    password_hash: str
    roles: tuple[str, ...] = ()
    since: int = 0
    no_password: bool = False


class RoleRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    name: str
    permissions: tuple[Permission, ...] = ()


class AuthState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The whole auth store, as stored and as snapshots carry it (users and roles sorted by name)."""

    enabled: bool = False
    revision: int = 0
    secret: bytes = b""
    users: tuple[UserRecord, ...] = ()
    roles: tuple[RoleRecord, ...] = ()


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(AuthState)


def encode_state(state: AuthState) -> bytes:
    return _ENCODER.encode(state)


def decode_state(data: bytes) -> AuthState:
    """``b""`` is the empty store (a backend that never held one)."""
    return _DECODER.decode(data) if data else AuthState()


Interval = tuple[bytes, bytes | None]
"""``[start, end)``; ``end is None``: no upper bound."""


def interval(key: bytes, range_end: bytes | None) -> Interval:
    """The keys of ``(key, range_end)`` (:mod:`raftkv.kv.keys`' conventions) as one interval."""
    if is_single_key(range_end):
        return key, key + b"\0"  # the smallest key above ``key``
    start = key or b"\0"  # keys are never empty: [b"", ...) and [b"\0", ...) hold the same keys (etcd's "all keys")
    if range_end == FROM_KEY:
        return start, None
    return start, range_end


def _start(i: Interval) -> bytes:
    return i[0]


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-adjacent intervals with the same union (empty ones dropped)."""
    out: list[Interval] = []
    for start, end in sorted((i for i in intervals if i[1] is None or i[0] < i[1]), key=_start):
        if out:
            last_start, last_end = out[-1]
            if last_end is None:
                break  # the last one reaches the end of the key space: it covers everything after
            if start <= last_end:
                out[-1] = (last_start, None if end is None else max(last_end, end))
                continue
        out.append((start, end))
    return out


def covers(merged: list[Interval], wanted: Interval) -> bool:
    """Whether the union of ``merged`` (from :func:`merge`) contains every key of ``wanted``."""
    start, end = wanted
    if end is not None and end <= start:
        return True  # an empty range touches no key
    k = bisect.bisect_right(merged, start, key=_start) - 1  # the last interval starting at or before it
    if k < 0:
        return False
    _s, e = merged[k]
    return e is None or (end is not None and end <= e)


def _denied(what: str) -> ErrorResult:
    return ErrorResult(ErrorCode.PERMISSION_DENIED, f"permission denied: {what}")


def _fail(code: ErrorCode, message: str) -> ErrorResult:
    return ErrorResult(code, message)


class AuthStore:
    """The auth store in memory: its rules (:meth:`apply`) and its checks (:meth:`check`, :meth:`allowed`)."""

    __slots__ = ("_merged", "enabled", "revision", "roles", "secret", "users")

    def __init__(self, state: AuthState | None = None) -> None:
        state = state or AuthState()
        self.enabled = state.enabled
        self.revision = state.revision
        self.secret = state.secret
        self.users: dict[str, UserRecord] = {u.name: u for u in state.users}
        self.roles: dict[str, RoleRecord] = {r.name: r for r in state.roles}
        self._merged: dict[tuple[str, str], list[Interval]] = {}
        """Per (user, "read" | "write"): its permissions' merged intervals (cleared on every change)."""

    def state(self) -> AuthState:
        return AuthState(
            self.enabled,
            self.revision,
            self.secret,
            tuple(self.users[n] for n in sorted(self.users)),
            tuple(self.roles[n] for n in sorted(self.roles)),
        )

    # --- who may do what ----------------------------------------------------------------------------------

    def is_root(self, user: str) -> bool:
        record = self.users.get(user)
        return record is not None and ROOT in record.roles

    def allowed(self, user: str, kind: str, key: bytes, range_end: bytes | None) -> bool:
        """Whether ``user``'s roles allow ``kind`` ("read" or "write") on every key of ``(key, range_end)``."""
        if not self.enabled or self.is_root(user):
            return True
        merged = self._merged.get((user, kind))
        if merged is None:
            record = self.users.get(user)
            found: list[Interval] = []
            for role_name in record.roles if record is not None else ():
                role = self.roles.get(role_name)
                for p in role.permissions if role is not None else ():
                    if p.type in ("readwrite", kind):
                        found.append(interval(p.key, p.range_end))
            merged = self._merged[(user, kind)] = merge(found)
        return covers(merged, interval(key, range_end))

    def check(self, user: str, command: Command, lease_keys: Callable[[int], list[bytes]]) -> ErrorResult | None:
        """Why ``user`` may not run ``command`` (None: it may). Deterministic: the state machine runs it on every
        replica. ``lease_keys`` gives the live keys of a lease (a revoke deletes them: it needs write on each)."""
        if not self.enabled:
            return None
        if not user:
            return _fail(ErrorCode.USER_EMPTY, "user name is empty: authenticate first (--user)")
        if user not in self.users:
            return _denied(f"user {user!r} does not exist")
        if self.is_root(user):
            return None
        return self._check(user, command, lease_keys)

    def _check(self, user: str, command: Command, lease_keys: Callable[[int], list[bytes]]) -> ErrorResult | None:
        match command:
            case Request():
                return self._check(user, command.op, lease_keys)
            case Put():
                if not self.allowed(user, "write", command.key, None):
                    return _denied(f"user {user!r} may not write {command.key!r}")
                if command.prev_kv and not self.allowed(user, "read", command.key, None):
                    return _denied(f"user {user!r} may not read {command.key!r} (prev_kv)")
                return None
            case DeleteRange():
                if not self.allowed(user, "write", command.key, command.range_end):
                    return _denied(f"user {user!r} may not delete {_describe(command.key, command.range_end)}")
                if command.prev_kv and not self.allowed(user, "read", command.key, command.range_end):
                    return _denied(f"user {user!r} may not read {_describe(command.key, command.range_end)}")
                return None
            case Range():
                if not self.allowed(user, "read", command.key, command.range_end):
                    return _denied(f"user {user!r} may not read {_describe(command.key, command.range_end)}")
                return None
            case Txn():
                # etcd: every compare needs read, and both branches are checked whichever runs.
                for c in command.compare:
                    if not self.allowed(user, "read", c.key, None):
                        return _denied(f"user {user!r} may not read {c.key!r} (a compare)")
                for op in (*command.success, *command.failure):
                    if (why := self._check(user, op, lease_keys)) is not None:
                        return why
                return None
            case LeaseRevoke():
                for key in lease_keys(command.id):
                    if not self.allowed(user, "write", key, None):
                        return _denied(f"user {user!r} may not revoke lease {command.id}: it holds {key!r}")
                return None
            case LeaseTimeToLive():
                if command.keys:
                    for key in lease_keys(command.id):
                        if not self.allowed(user, "read", key, None):
                            return _denied(f"user {user!r} may not list the keys of lease {command.id}")
                return None
            case LeaseGrant() | LeaseKeepAlive() | LeaseLeases() | OpenSession() | KeepAlive() | CloseSession():
                return None
            case Compact():
                return _denied("only a user with role root may compact while authentication is on")
            case _:
                return _denied(f"only a user with role root may run {type(command).__name__}")

    # --- changes (every replica alike) -------------------------------------------------------------------

    def apply(self, change: AuthChange) -> AuthResult | ErrorResult:
        """Apply one change; an ``ErrorResult`` leaves the store as it was (etcd's error cases)."""
        if isinstance(change, AuthEnable) and self.enabled:
            return AuthResult(self.revision)  # etcd: a no-op, and the tokens issued stay good
        result = self._apply(change)
        if result is None:
            self.revision += 1
            self._merged.clear()
            return AuthResult(self.revision)
        return result

    def _apply(self, change: AuthChange) -> ErrorResult | None:
        users, roles = self.users, self.roles
        match change:
            case AuthEnable():
                root = users.get(ROOT)
                if root is None:
                    return _fail(
                        ErrorCode.ROOT_USER_NOT_EXIST, "root user does not exist: add it first (user add root)"
                    )
                if ROOT not in root.roles:
                    return _fail(
                        ErrorCode.ROOT_ROLE_NOT_EXIST, "root user does not have root role (user grant-role root root)"
                    )
                if not change.secret:
                    return _fail(ErrorCode.INVALID_COMMAND, "an auth enable without a token secret")
                self.enabled, self.secret = True, change.secret
            case AuthDisable():
                self.enabled = False
            case UserAdd():
                if change.password:
                    return _plaintext()
                if not change.password_hash and not change.no_password:
                    return _fail(ErrorCode.INVALID_COMMAND, f"user {change.name!r} needs a password, or no_password")
                if change.name in users:
                    return _fail(ErrorCode.USER_EXISTS, f"user name already exists: {change.name!r}")
                since = self.revision + 1
                users[change.name] = UserRecord(change.name, change.password_hash, (), since, change.no_password)
            case UserDelete():
                if change.name not in users:
                    return _no_user(change.name)
                if self.enabled and change.name == ROOT:
                    return _lockout("the root user cannot be deleted while authentication is on")
                del users[change.name]
            case UserChangePassword():
                if change.password:
                    return _plaintext()
                user = users.get(change.name)
                if user is None:
                    return _no_user(change.name)
                if not change.password_hash:
                    return _fail(ErrorCode.INVALID_COMMAND, "a password change without a password")
                users[change.name] = UserRecord(user.name, change.password_hash, user.roles, self.revision + 1)
            case UserGrantRole():
                user = users.get(change.user)
                if user is None:
                    return _no_user(change.user)
                if change.role != ROOT and change.role not in roles:
                    return _no_role(change.role)
                if change.role not in user.roles:
                    granted = tuple(sorted((*user.roles, change.role)))
                    users[user.name] = msgspec.structs.replace(user, roles=granted)
            case UserRevokeRole():
                user = users.get(change.user)
                if user is None:
                    return _no_user(change.user)
                if change.role not in user.roles:
                    return _fail(ErrorCode.ROLE_NOT_GRANTED, f"role is not granted to the user: {change.role!r}")
                if self.enabled and user.name == ROOT and change.role == ROOT:
                    return _lockout("the root user's root role cannot be revoked while authentication is on")
                kept = tuple(r for r in user.roles if r != change.role)
                users[user.name] = msgspec.structs.replace(user, roles=kept)
            case RoleAdd():
                if change.name in roles:
                    return _fail(ErrorCode.ROLE_EXISTS, f"role name already exists: {change.name!r}")
                roles[change.name] = RoleRecord(change.name)
            case RoleDelete():
                if change.name not in roles:
                    return _no_role(change.name)
                if self.enabled and change.name == ROOT:
                    return _lockout("the root role cannot be deleted while authentication is on")
                del roles[change.name]
                for name, user in list(users.items()):  # etcd takes it from every user that has it
                    if change.name in user.roles:
                        kept = tuple(r for r in user.roles if r != change.name)
                        users[name] = msgspec.structs.replace(user, roles=kept)
            case RoleGrantPermission():
                role = roles.get(change.role)
                if role is None:
                    return _no_role(change.role)
                p = change.permission
                rest = [q for q in role.permissions if (q.key, q.range_end or None) != (p.key, p.range_end or None)]
                perms = sorted((*rest, p), key=lambda q: (q.key, q.range_end or b""))
                roles[role.name] = RoleRecord(role.name, tuple(perms))
            case RoleRevokePermission():
                role = roles.get(change.role)
                if role is None:
                    return _no_role(change.role)
                wanted = (change.key, change.range_end or None)
                kept_perms = tuple(q for q in role.permissions if (q.key, q.range_end or None) != wanted)
                if len(kept_perms) == len(role.permissions):
                    return _fail(
                        ErrorCode.PERMISSION_NOT_GRANTED,
                        f"permission is not granted to the role: {_describe(change.key, change.range_end)}",
                    )
                roles[role.name] = RoleRecord(role.name, kept_perms)
        return None


def _describe(key: bytes, range_end: bytes | None) -> str:
    if is_single_key(range_end):
        return repr(key)
    if range_end == FROM_KEY:
        return f"every key from {key!r}"
    return f"[{key!r}, {range_end!r})"


def _plaintext() -> ErrorResult:
    return _fail(ErrorCode.INVALID_COMMAND, "a password in clear in a log command (the node hashes it first)")


def _no_user(name: str) -> ErrorResult:
    return _fail(ErrorCode.USER_NOT_FOUND, f"user name not found: {name!r}")


def _no_role(name: str) -> ErrorResult:
    return _fail(ErrorCode.ROLE_NOT_FOUND, f"role name not found: {name!r}")


def _lockout(why: str) -> ErrorResult:
    return _fail(ErrorCode.INVALID_AUTH_MGMT, f"invalid auth management: {why}")
