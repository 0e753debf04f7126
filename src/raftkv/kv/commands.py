"""Commands, results and their wire encoding (msgspec MessagePack, tagged array-like structs).

Theory of operation
-------------------
A client's write becomes the ``data`` of one Raft log entry: the bytes of one *command*. Every node decodes the
same bytes and applies them, so the encoding is part of the replicated state's definition and must stay
readable by every future version (add new tagged structs and trailing fields with defaults; never renumber).

Encoding. Each struct is a MessagePack array ``[tag, field1, field2, ...]`` (msgspec ``array_like=True`` with a
string tag): no field names on the wire, and a decoder built once for the whole tagged union (the fast path:
about a microsecond for a ``Request(Put)``). :func:`decode_command` turns any failure, including bytes that are
not MessagePack at all, into :class:`~raftkv.kv.errors.CommandError`; the state machine turns that into an
``ErrorResult(INVALID_COMMAND)`` so a garbage entry in the log is applied (as a no-op) identically everywhere.

Validation happens in ``__post_init__``, which msgspec runs both when a client constructs a struct (the client
gets a ``CommandError`` at once) and when the state machine decodes one (the entry becomes an error result):
non-empty single keys, key and value sizes (:mod:`raftkv.kv.keys`), non-negative counters, a compare value whose
type matches its target.

Data model (etcd v3). :class:`KeyValue` carries etcd's per-key bookkeeping: ``create_revision`` (revision of the
write that created the key), ``mod_revision`` (of the last write), ``version`` (writes since creation, 1 on
create, reset by a delete). Commands:

* ``Put``, ``DeleteRange``, ``Range`` and ``Txn`` (compare-then-ops, etcd's mini-transaction; CAS is a Txn);
* ``OpenSession`` / ``KeepAlive`` / ``CloseSession`` and ``Request`` — the exactly-once client sessions of the
  Raft dissertation §6.3: a write wrapped in ``Request(session_id, seq, time_ms, op)`` is applied at most once.

``time_ms`` is the leader's clock when it proposed the command (:func:`stamp` sets it). It is the only way time
enters the state machine; see ``machine.py``.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

from raftkv.kv.errors import CommandError, ErrorCode
from raftkv.kv.keys import MAX_KEY_BYTES, MAX_VALUE_BYTES


def _check_key(key: bytes, what: str = "key") -> None:
    if len(key) > MAX_KEY_BYTES:
        raise CommandError(f"{what} is {len(key)} bytes, more than the limit of {MAX_KEY_BYTES}")


def _check_single_key(key: bytes, range_end: bytes | None) -> None:
    _check_key(key)
    if range_end:
        _check_key(range_end, "range_end")
    elif not key:
        # etcd refuses an empty key too (ErrEmptyKey); as a range's lower bound it is allowed.
        raise CommandError("key must not be empty (use range_end=b'\\0' with key=b'\\0' for every key)")


def _check_non_negative(**fields: int) -> None:
    for name, value in fields.items():
        if value < 0:
            raise CommandError(f"{name} must be >= 0, got {value}")


class KeyValue(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One key's value and bookkeeping at some revision (etcd's ``mvccpb.KeyValue``).

    Invariants for a stored key: ``1 <= create_revision <= mod_revision``, ``version >= 1``. In a DELETE watch
    event only ``key`` and ``mod_revision`` (the delete's revision) are set; the rest are zero. ``lease`` is the
    id of the lease the key is attached to (0: none).
    """

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


# --- commands ---------------------------------------------------------------------------------------------


class Put(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="put"):
    """Set ``key`` to ``value``. ``prev_kv``: return the previous key-value in the result. ``lease``: attach the
    key to that lease (it must exist), so revoking or expiring the lease deletes it; 0 (the default) attaches it
    to none, detaching it from a lease it had (etcd). Encodings from before ``lease`` existed still decode."""

    key: bytes
    value: bytes
    prev_kv: bool = False
    lease: int = 0

    def __post_init__(self) -> None:
        if not self.key:
            raise CommandError("key must not be empty")
        _check_key(self.key)
        if len(self.value) > MAX_VALUE_BYTES:
            raise CommandError(f"value is {len(self.value)} bytes, more than the limit of {MAX_VALUE_BYTES}")
        if self.lease < 0:  # inline, not _check_non_negative: every replica decodes every put
            _check_non_negative(lease=self.lease)


class DeleteRange(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="del"):
    """Delete ``key``, or every key in ``[key, range_end)`` (see :mod:`raftkv.kv.keys` for range rules)."""

    key: bytes
    range_end: bytes | None = None
    prev_kv: bool = False

    def __post_init__(self) -> None:
        _check_single_key(self.key, self.range_end)


SortOrder: TypeAlias = Literal["none", "ascend", "descend"]
SortTarget: TypeAlias = Literal["key", "version", "create", "mod", "value"]
SORT_ORDERS: Final = ("none", "ascend", "descend")
SORT_TARGETS: Final = ("key", "version", "create", "mod", "value")


class Range(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="range"):
    """Read ``key`` or a range, as etcd's ``RangeRequest`` (field for field; see ``machine.py`` for the order in
    which filters, sort and limit apply).

    ``limit`` 0 means no limit; ``count`` in the result counts every key of the range at that revision,
    whatever the limit and the min/max filters. ``revision`` 0 reads the current revision, otherwise that past
    one (refused below the compaction revision and above the current one). ``sort_order`` "none" with a
    ``sort_target`` other than "key" sorts ascending (etcd). ``min_*``/``max_*`` keep only keys whose create or
    mod revision is within the bound (0: no bound)."""

    key: bytes
    range_end: bytes | None = None
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False
    revision: int = 0
    sort_order: SortOrder = "none"
    sort_target: SortTarget = "key"
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0

    def __post_init__(self) -> None:
        _check_single_key(self.key, self.range_end)
        _check_non_negative(
            limit=self.limit,
            revision=self.revision,
            min_mod_revision=self.min_mod_revision,
            max_mod_revision=self.max_mod_revision,
            min_create_revision=self.min_create_revision,
            max_create_revision=self.max_create_revision,
        )
        if self.sort_order not in SORT_ORDERS:
            raise CommandError(f"sort order must be one of {', '.join(SORT_ORDERS)}, got {self.sort_order!r}")
        if self.sort_target not in SORT_TARGETS:
            raise CommandError(f"sort target must be one of {', '.join(SORT_TARGETS)}, got {self.sort_target!r}")

    @property
    def needs_all(self) -> bool:
        """Whether the result depends on more than the first ``limit`` keys in key order (sorted or filtered)."""
        return (
            self.sort_order != "none"
            or self.sort_target != "key"
            or bool(self.min_mod_revision or self.max_mod_revision)
            or bool(self.min_create_revision or self.max_create_revision)
        )


CompareTarget: TypeAlias = Literal["value", "version", "create", "mod", "lease"]
CompareOp: TypeAlias = Literal["=", "!=", "<", ">"]
_TARGETS: Final = frozenset(("value", "version", "create", "mod", "lease"))
_OPS: Final = frozenset(("=", "!=", "<", ">"))


class Compare(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A guard of a :class:`Txn`: ``<target of key> <op> value``.

    etcd semantics for a missing key: its version, create and mod revisions and its lease are 0, and a ``value``
    comparison is false whatever the operator. ``value`` is ``bytes`` for the ``value`` target and ``int`` for
    the others; bytes compare lexicographically.
    """

    key: bytes
    target: CompareTarget
    op: CompareOp
    value: bytes | int

    def __post_init__(self) -> None:
        if not self.key:
            raise CommandError("compare key must not be empty")
        _check_key(self.key)
        if self.target not in _TARGETS:
            raise CommandError(f"compare target must be one of {sorted(_TARGETS)}, got {self.target!r}")
        if self.op not in _OPS:
            raise CommandError(f"compare op must be one of {sorted(_OPS)}, got {self.op!r}")
        if self.target == "value":
            if not isinstance(self.value, bytes):
                raise CommandError("a value comparison needs a bytes value")
        elif not isinstance(self.value, int) or isinstance(self.value, bool):
            raise CommandError(f"a {self.target} comparison needs an int value")


Op: TypeAlias = Put | DeleteRange | Range
"""What a transaction branch may contain."""


class Compact(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="compact"):
    """Compact the history at ``revision`` (etcd's ``Compact``): reads and watches at revisions below it are
    refused from then on; the versions only they could see are removed (in the background, in bounded steps).
    Refused (as etcd) at or below the current compaction revision and above the current revision."""

    revision: int

    def __post_init__(self) -> None:
        if self.revision < 1:
            raise CommandError(f"compaction revision must be >= 1, got {self.revision}")


class Txn(msgspec.Struct, frozen=True, array_like=True, tag="txn"):
    """If every ``compare`` holds, run ``success`` in order, else ``failure``: atomically, at one revision.

    Ops of a branch see the effects of the ops before them (a Range after a Put reads the new value; two Puts to
    one key bump its version twice). etcd refuses duplicate keys in a branch instead; we allow them and define
    the result by sequential execution.
    """

    compare: list[Compare] = msgspec.field(default_factory=list)
    success: list[Op] = msgspec.field(default_factory=list)
    failure: list[Op] = msgspec.field(default_factory=list)


MAX_LEASE_TTL_S: Final = 9_000_000_000
"""etcd's ``MaxLeaseTTL`` (about 285 years): a longer TTL is refused."""


class LeaseGrant(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lgrant"):
    """Grant a lease of ``ttl_s`` seconds (etcd's ``LeaseGrant``). ``id`` 0 lets the store pick one (this
    command's log index: unique, and the same on every node); another id must not be in use."""

    ttl_s: int
    id: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.ttl_s <= MAX_LEASE_TTL_S:
            raise CommandError(f"lease TTL must be 1..{MAX_LEASE_TTL_S} seconds, got {self.ttl_s}")
        _check_non_negative(id=self.id)


class LeaseRevoke(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lrevoke"):
    """Revoke a lease: delete every key attached to it (at one revision, as a delete-range) and the lease.
    ``expired``: the leader revokes it because its TTL ran out (for the record; the effect is the same)."""

    id: int
    expired: bool = False

    def __post_init__(self) -> None:
        if self.id < 1:
            raise CommandError(f"lease id must be >= 1, got {self.id}")


Write: TypeAlias = Put | DeleteRange | Txn | Compact | LeaseGrant | LeaseRevoke


class LeaseKeepAlive(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lkeepalive"):
    """Refresh a lease's deadline to a whole TTL from now. Answered by the leader from its timers, never
    replicated (etcd's keep-alive): a node query, not a log command."""

    id: int


class LeaseTimeToLive(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lttl"):
    """A lease's remaining and granted TTL, and with ``keys`` its attached keys (a node query, on the leader)."""

    id: int
    keys: bool = False


class LeaseLeases(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lleases"):
    """Every lease's id (a node query, on the leader)."""


LeaseQuery: TypeAlias = LeaseKeepAlive | LeaseTimeToLive | LeaseLeases
"""Node queries about leases: the leader answers them from its timers and its store, outside the log."""


# --- users, roles and permissions (etcd's RBAC; the rules are in auth.py) -----------------------------------

PermissionType: TypeAlias = Literal["read", "write", "readwrite"]
PERMISSION_TYPES: Final = ("read", "write", "readwrite")


def _check_name(name: str, what: str) -> None:
    if not name:
        raise CommandError(f"{what} name must not be empty")
    if len(name) > 256:
        raise CommandError(f"{what} name is {len(name)} characters, more than the limit of 256")


class Permission(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Leave to ``read``, ``write`` or ``readwrite`` the keys ``(key, range_end)`` (a single key, an interval, or
    every key from ``key`` on: the ranges of :mod:`raftkv.kv.keys`)."""

    type: PermissionType
    key: bytes
    range_end: bytes | None = None

    def __post_init__(self) -> None:
        if self.type not in PERMISSION_TYPES:
            raise CommandError(f"permission type must be one of {', '.join(PERMISSION_TYPES)}, got {self.type!r}")
        _check_single_key(self.key, self.range_end)


class AuthEnable(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="auth_enable"):
    """Turn authentication on (etcd's ``AuthEnable``): refused unless user ``root`` exists with role ``root``.
    ``secret`` signs the tokens issued from then on; the node that proposes it draws it (the state machine
    draws nothing), so every enable invalidates the tokens of the one before."""

    secret: bytes = b""


class AuthDisable(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="auth_disable"):
    """Turn authentication off (root only while it is on)."""


class UserAdd(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="user_add"):
    """Add a user. A client sends ``password``; the node that receives it replaces it by ``password_hash`` (a
    salted scrypt hash) before proposing, so that no password is ever written to the log: the state machine
    refuses one that still carries ``password``. ``no_password``: the user can only be one by its TLS client
    certificate (``--client-cert-auth``), never by a password."""

    name: str
    password: str = ""
    password_hash: str = ""
    no_password: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name, "user")


class UserDelete(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="user_delete"):
    name: str


class UserChangePassword(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="user_passwd"):
    """Change a user's password (``password`` in, ``password_hash`` proposed, as :class:`UserAdd`); the
    user's tokens issued before it stop working."""

    name: str
    password: str = ""
    password_hash: str = ""


class UserGrantRole(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="user_grant"):
    user: str
    role: str

    def __post_init__(self) -> None:
        _check_name(self.role, "role")


class UserRevokeRole(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="user_revoke"):
    user: str
    role: str


class RoleAdd(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="role_add"):
    name: str

    def __post_init__(self) -> None:
        _check_name(self.name, "role")


class RoleDelete(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="role_delete"):
    """Delete a role, and take it from every user that has it (etcd)."""

    name: str


class RoleGrantPermission(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="role_grant"):
    """Give ``role`` a permission; one on the same range already there has its type replaced (etcd)."""

    role: str
    permission: Permission


class RoleRevokePermission(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="role_revoke"):
    """Take from ``role`` its permission on exactly ``(key, range_end)``."""

    role: str
    key: bytes
    range_end: bytes | None = None


AuthChange: TypeAlias = (
    AuthEnable
    | AuthDisable
    | UserAdd
    | UserDelete
    | UserChangePassword
    | UserGrantRole
    | UserRevokeRole
    | RoleAdd
    | RoleDelete
    | RoleGrantPermission
    | RoleRevokePermission
)
"""Log commands that change the auth store (root only while authentication is on)."""


class Authenticate(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="authenticate"):
    """Exchange a user's password for a token (a node query: checked against the applied auth store)."""

    name: str
    password: str


class AuthStatus(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="auth_status"):
    """Whether authentication is on, and the auth store's revision (a node query, open to anyone)."""


class UserGet(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="user_get"):
    name: str


class UserList(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="user_list"):
    pass


class RoleGet(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="role_get"):
    name: str


class RoleList(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="role_list"):
    pass


AuthQuery: TypeAlias = Authenticate | AuthStatus | UserGet | UserList | RoleGet | RoleList
"""Node queries about users and roles, answered from the applied auth store after a read barrier."""
"""What a session :class:`Request` may wrap."""


class OpenSession(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="open"):
    """Open a client session; its id is the log index of this command (deterministic on every node)."""

    ttl_ms: int
    time_ms: int = 0

    def __post_init__(self) -> None:
        if self.ttl_ms <= 0:
            raise CommandError(f"ttl_ms must be > 0, got {self.ttl_ms}")
        _check_non_negative(time_ms=self.time_ms)


class KeepAlive(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="keepalive"):
    """Refresh a session's last-activity time without writing anything."""

    session_id: int
    time_ms: int = 0

    def __post_init__(self) -> None:
        _check_non_negative(session_id=self.session_id, time_ms=self.time_ms)


class CloseSession(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="close"):
    """Forget a session at once (idempotent: closing a session that is not open also succeeds)."""

    session_id: int
    time_ms: int = 0

    def __post_init__(self) -> None:
        _check_non_negative(session_id=self.session_id, time_ms=self.time_ms)


class Request(msgspec.Struct, frozen=True, array_like=True, tag="req"):
    """A write applied at most once per ``(session_id, seq)`` (dissertation §6.3).

    ``seq`` starts at 1 and grows with each new request of the session (gaps allowed). A retry carries the same
    ``seq`` and gets the first execution's result back without re-applying it. Several requests of a session may
    be in flight at once, applied in any order: ``first_incomplete`` is the lowest ``seq`` the client has not yet
    received a reply for (§6.3), and the session keeps the result of every applied request from there on. 0
    (the default) means "just this request": only its result is kept, one request in flight at a time.
    """

    session_id: int
    seq: int
    time_ms: int
    op: Write
    first_incomplete: int = 0

    def __post_init__(self) -> None:
        if self.session_id < 0 or self.time_ms < 0 or self.first_incomplete < 0:  # the hot path: no kwargs dict
            _check_non_negative(
                session_id=self.session_id, time_ms=self.time_ms, first_incomplete=self.first_incomplete
            )
        if self.seq < 1:
            raise CommandError(f"seq must be >= 1, got {self.seq}")
        if self.first_incomplete > self.seq:
            raise CommandError(f"first_incomplete {self.first_incomplete} is above the request's own seq {self.seq}")


LogCommand: TypeAlias = (
    Put
    | DeleteRange
    | Range
    | Txn
    | OpenSession
    | KeepAlive
    | CloseSession
    | Request
    | Compact
    | LeaseGrant
    | LeaseRevoke
    | AuthEnable
    | AuthDisable
    | UserAdd
    | UserDelete
    | UserChangePassword
    | UserGrantRole
    | UserRevokeRole
    | RoleAdd
    | RoleDelete
    | RoleGrantPermission
    | RoleRevokePermission
)
"""What a client's command proposes (and what :class:`Authed` may wrap)."""


class Authed(msgspec.Struct, frozen=True, array_like=True, tag="as"):
    """``command`` on behalf of ``user``: the node checked the user's permissions before proposing it, and the
    state machine checks them again when it applies it, against the auth store as of that point of the log,
    so that a permission revoked before the command's entry is never exercised after it (see auth.py).
    Commands are wrapped once the auth store has been touched; the node's own (a lease's expiry) never are."""

    user: str
    command: LogCommand


class Internal(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="node"):
    """A command a node proposes on its own account: the leader revoking an expired lease, the automatic
    compaction. It is applied whoever the users are; it may wrap nothing else (the state machine refuses any
    other command in it), and a client may not send one."""

    command: LeaseRevoke | Compact


Command: TypeAlias = LogCommand | LeaseKeepAlive | LeaseTimeToLive | LeaseLeases | AuthQuery | Authed | Internal
"""Everything that may appear as an entry's data (node queries too: applied as no-ops, never proposed)."""

TimedCommand: TypeAlias = OpenSession | KeepAlive | CloseSession | Request


# --- results ----------------------------------------------------------------------------------------------


class PutResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="put"):
    """``revision``: the store revision after the put. ``prev_kv``: the overwritten pair, when asked for."""

    revision: int
    prev_kv: KeyValue | None = None


class DeleteResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="del"):
    """``deleted`` keys (``prev_kvs`` holds them when asked for); ``revision`` is unchanged if none existed."""

    revision: int
    deleted: int
    prev_kvs: tuple[KeyValue, ...] = ()


class RangeResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="range"):
    """``kvs`` in key order (at most ``limit``); ``count`` of all keys in the range; ``more`` if truncated."""

    kvs: tuple[KeyValue, ...]
    count: int
    more: bool
    revision: int


OpResult: TypeAlias = PutResult | DeleteResult | RangeResult


class TxnResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="txn"):
    """Which branch ran, one result per op of that branch, and the revision after the transaction.

    An inner result's ``revision`` is the store revision as that op saw it: the transaction's revision once any
    earlier op of the branch changed something, the previous revision before that.
    """

    succeeded: bool
    responses: tuple[OpResult, ...]
    revision: int


class SessionResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="session"):
    """Answer to OpenSession / KeepAlive / CloseSession."""

    session_id: int


class CompactResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="compact"):
    """The history is compacted at ``compact_revision``; ``revision`` is the store's."""

    compact_revision: int
    revision: int


class LeaseGrantResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lgrant"):
    """The granted lease's ``id`` and ``ttl_s``; ``revision`` is the store's (a grant does not change it)."""

    id: int
    ttl_s: int
    revision: int


class LeaseRevokeResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lrevoke"):
    """The lease is gone; ``deleted`` keys went with it, at ``revision`` (unchanged if it held none)."""

    revision: int
    deleted: int


class LeaseKeepAliveResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lkeepalive"):
    """The lease lives ``ttl_s`` more seconds from now."""

    id: int
    ttl_s: int


class LeaseTimeToLiveResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lttl"):
    """``ttl_s``: seconds left (etcd's TTL, rounded down); ``granted_ttl_s``; ``keys`` when asked for."""

    id: int
    ttl_s: int
    granted_ttl_s: int
    keys: tuple[bytes, ...] = ()


class LeaseLeasesResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="lleases"):
    ids: tuple[int, ...]


class AuthResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="auth"):
    """A change to the auth store took effect; ``auth_revision`` counts the changes so far."""

    auth_revision: int


class AuthenticateResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="authenticate"):
    """The token to carry in every request's header (it expires: the client then authenticates again)."""

    token: str


class AuthStatusResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="auth_status"):
    enabled: bool
    auth_revision: int


class UserGetResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="user_get"):
    name: str
    roles: tuple[str, ...]


class RoleGetResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="role_get"):
    name: str
    permissions: tuple[Permission, ...]


class NamesResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="names"):
    """The users, or the roles, sorted."""

    names: tuple[str, ...]


class ErrorResult(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="error"):
    """A command that was applied as a no-op, and why. Deterministic: every replica produces the same one.

    ``revision``: for ``COMPACTED`` the oldest revision held, for ``FUTURE_REVISION`` the store's (else 0)."""

    code: ErrorCode
    message: str
    revision: int = 0


Result: TypeAlias = (
    PutResult
    | DeleteResult
    | RangeResult
    | TxnResult
    | SessionResult
    | CompactResult
    | LeaseGrantResult
    | LeaseRevokeResult
    | LeaseKeepAliveResult
    | LeaseTimeToLiveResult
    | LeaseLeasesResult
    | AuthResult
    | AuthenticateResult
    | AuthStatusResult
    | UserGetResult
    | RoleGetResult
    | NamesResult
    | ErrorResult
)


# --- encoding ---------------------------------------------------------------------------------------------

_ENCODER: Final = msgspec.msgpack.Encoder()
_COMMAND_DECODER: Final[msgspec.msgpack.Decoder[Command]] = msgspec.msgpack.Decoder(Command)
_RESULT_DECODER: Final[msgspec.msgpack.Decoder[Result | None]] = msgspec.msgpack.Decoder(Result | None)


def encode_command(command: Command) -> bytes:
    """The bytes to propose for ``command``."""
    return _ENCODER.encode(command)


def decode_command(data: bytes) -> Command:
    """Decode a command; any failure (garbage, unknown tag, invalid field) raises :class:`CommandError`."""
    try:
        return _COMMAND_DECODER.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError (including __post_init__'s) is a DecodeError
        raise CommandError(f"not a valid command: {exc}") from None


def encode_result(result: Result | None) -> bytes:
    """The bytes of a result (``None`` is the result of a no-op entry)."""
    return _ENCODER.encode(result)


def decode_result(data: bytes) -> Result | None:
    """Decode a result; any failure raises :class:`CommandError`."""
    try:
        return _RESULT_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise CommandError(f"not a valid result: {exc}") from None


def stamp(command: Command, time_ms: int) -> Command:
    """``command`` carrying the proposer's clock ``time_ms`` (commands that carry no time are returned as is).

    The leader stamps each session command with its clock just before proposing it; the state machine's clock is
    the largest stamp applied so far, so a leader with a slow clock cannot move time backwards.
    """
    if isinstance(command, OpenSession | KeepAlive | CloseSession | Request):
        return msgspec.structs.replace(command, time_ms=time_ms)
    if isinstance(command, Authed):
        inner = stamp(command.command, time_ms)
        return command if inner is command.command else Authed(command.user, inner)  # type: ignore[arg-type]
    return command
