"""``AuthAdmin``: users, roles and permissions (etcd's Auth API), as ``client.auth``.

Every method is one command of the client's batches (``raftkv.kv.commands``): changes go through the log,
questions are answered by the leader from the store it has applied (after a read barrier). While
authentication is on, only a user with role ``root`` may change the store or list it; anyone may ask for the
status, and a user for itself and its own roles. A refusal raises :class:`~raftkv.errors.PermissionDenied`
(or :class:`~raftkv.errors.AuthError` with etcd's case: user not found, root user missing...).

Passwords travel to the node in clear, inside the connection (use TLS on the client port), and are hashed
there before the change is proposed: no password is ever written to the log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from raftkv.errors import InvariantViolation
from raftkv.kv.commands import (
    AuthDisable,
    AuthEnable,
    AuthResult,
    AuthStatus,
    AuthStatusResult,
    Command,
    ErrorResult,
    NamesResult,
    Permission,
    PermissionType,
    Result,
    RoleAdd,
    RoleDelete,
    RoleGet,
    RoleGetResult,
    RoleGrantPermission,
    RoleList,
    RoleRevokePermission,
    UserAdd,
    UserChangePassword,
    UserDelete,
    UserGet,
    UserGetResult,
    UserGrantRole,
    UserList,
    UserRevokeRole,
    encode_command,
)
from raftkv.kv.errors import auth_error
from raftkv.kv.keys import prefix_end

Call = Callable[[bytes, float | None], Awaitable[Result | None]]
"""Sends one encoded command in the client's batches and awaits its result."""

R = TypeVar("R", AuthResult, AuthStatusResult, NamesResult, UserGetResult, RoleGetResult)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class AuthAdmin:
    """The Auth API of a :class:`~raftkv.client.Client` (``client.auth``)."""

    def __init__(self, call: Call) -> None:
        self._call = call

    async def _run(self, command: Command, kind: type[R], timeout: float | None) -> R:
        result = await self._call(encode_command(command), timeout)
        if isinstance(result, kind):
            return result
        if isinstance(result, ErrorResult):
            raise auth_error(result.code, result.message)
        raise InvariantViolation(f"a {kind.__name__} was expected, the node answered {result!r}")

    # --- authentication on and off ---

    async def enable(self, *, timeout: float | None = None) -> int:
        """Turn authentication on (needs user ``root`` with role ``root``); the auth revision."""
        return (await self._run(AuthEnable(), AuthResult, timeout)).auth_revision

    async def disable(self, *, timeout: float | None = None) -> int:
        return (await self._run(AuthDisable(), AuthResult, timeout)).auth_revision

    async def status(self, *, timeout: float | None = None) -> AuthStatusResult:
        return await self._run(AuthStatus(), AuthStatusResult, timeout)

    # --- users ---

    async def user_add(
        self, name: str, password: str = "", *, no_password: bool = False, timeout: float | None = None
    ) -> int:
        """Add a user with ``password`` (or, with ``no_password``, one known only by its TLS certificate)."""
        return (await self._run(UserAdd(name, password, no_password=no_password), AuthResult, timeout)).auth_revision

    async def user_delete(self, name: str, *, timeout: float | None = None) -> int:
        return (await self._run(UserDelete(name), AuthResult, timeout)).auth_revision

    async def user_change_password(self, name: str, password: str, *, timeout: float | None = None) -> int:
        return (await self._run(UserChangePassword(name, password), AuthResult, timeout)).auth_revision

    async def user_grant_role(self, user: str, role: str, *, timeout: float | None = None) -> int:
        return (await self._run(UserGrantRole(user, role), AuthResult, timeout)).auth_revision

    async def user_revoke_role(self, user: str, role: str, *, timeout: float | None = None) -> int:
        return (await self._run(UserRevokeRole(user, role), AuthResult, timeout)).auth_revision

    async def user_get(self, name: str, *, timeout: float | None = None) -> UserGetResult:
        return await self._run(UserGet(name), UserGetResult, timeout)

    async def user_list(self, *, timeout: float | None = None) -> list[str]:
        return list((await self._run(UserList(), NamesResult, timeout)).names)

    # --- roles ---

    async def role_add(self, name: str, *, timeout: float | None = None) -> int:
        return (await self._run(RoleAdd(name), AuthResult, timeout)).auth_revision

    async def role_delete(self, name: str, *, timeout: float | None = None) -> int:
        return (await self._run(RoleDelete(name), AuthResult, timeout)).auth_revision

    async def role_get(self, name: str, *, timeout: float | None = None) -> RoleGetResult:
        return await self._run(RoleGet(name), RoleGetResult, timeout)

    async def role_list(self, *, timeout: float | None = None) -> list[str]:
        return list((await self._run(RoleList(), NamesResult, timeout)).names)

    async def role_grant_permission(
        self,
        role: str,
        permission: PermissionType,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        timeout: float | None = None,
    ) -> int:
        """Let ``role`` ``read``, ``write`` or ``readwrite`` ``key`` (or ``[key, range_end)``, or every key
        under the prefix ``key``; ``range_end=b"\\0"``: every key from ``key`` on)."""
        k = _bytes(key)
        end = prefix_end(k) if prefix else (_bytes(range_end) if range_end is not None else None)
        return (
            await self._run(RoleGrantPermission(role, Permission(permission, k, end)), AuthResult, timeout)
        ).auth_revision

    async def role_revoke_permission(
        self,
        role: str,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        timeout: float | None = None,
    ) -> int:
        k = _bytes(key)
        end = prefix_end(k) if prefix else (_bytes(range_end) if range_end is not None else None)
        return (await self._run(RoleRevokePermission(role, k, end), AuthResult, timeout)).auth_revision
