"""``raftkv user ...``, ``raftkv role ...`` and ``raftkv auth enable|disable|status`` (etcdctl's names and
output lines). While authentication is on, these need ``--user root`` (a user with role root): see
docs/security.md."""

from __future__ import annotations

import sys
from typing import Any

import click

from raftkv.cli.common import client_call, endpoints_option, fail, json_option

_timeout = click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds, retries included.")


def _new_password(name: str, given: str | None) -> str:
    """The password from ``NAME:PASSWORD`` or ``--new-user-password``, or asked twice on a terminal."""
    if given is not None:
        return given
    if not sys.stdin.isatty():
        fail(f"no password for {name}: give {name}:PASSWORD or --new-user-password (no terminal to ask on)")
    first = click.prompt(f"Password of {name}", hide_input=True, err=True)
    again = click.prompt(f"Type password of {name} again for confirmation", hide_input=True, err=True)
    if first != again:
        fail("the two passwords differ; nothing changed")
    return str(first)


# --- auth ---------------------------------------------------------------------------------------------------


@click.group()
def auth() -> None:
    """Turn authentication on or off (on needs user root with role root)."""


@auth.command()
@endpoints_option
@_timeout
def enable(endpoints: str | None, timeout: float) -> None:
    """Turn authentication on: from then on every request needs a user (--user) and a permission."""

    async def op(c: Any) -> Any:
        return await c.auth.enable()

    client_call(endpoints, timeout, op)
    click.echo("Authentication Enabled")


@auth.command()
@endpoints_option
@_timeout
def disable(endpoints: str | None, timeout: float) -> None:
    """Turn authentication off (root only while it is on)."""

    async def op(c: Any) -> Any:
        return await c.auth.disable()

    client_call(endpoints, timeout, op)
    click.echo("Authentication Disabled")


@auth.command(name="status")
@endpoints_option
@json_option
@_timeout
def auth_status(endpoints: str | None, as_json: bool, timeout: float) -> None:
    """Whether authentication is on, and the auth store's revision."""

    async def op(c: Any) -> Any:
        return await c.auth.status()

    r = client_call(endpoints, timeout, op)
    if as_json:
        import json

        click.echo(json.dumps({"enabled": r.enabled, "authRevision": r.auth_revision}))
    else:
        click.echo(f"Authentication Status: {str(r.enabled).lower()}\nAuthRevision: {r.auth_revision}")


# --- users --------------------------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Users: add, delete, list, get, passwd, grant-role, revoke-role."""


@user.command(name="add")
@endpoints_option
@click.argument("name_password", metavar="NAME[:PASSWORD]")
@click.option("--new-user-password", default=None, help="The new user's password (else asked on the terminal).")
@click.option("--no-password", is_flag=True, help="A user without a password: known only by its TLS certificate.")
@_timeout
def user_add(
    endpoints: str | None, name_password: str, new_user_password: str | None, no_password: bool, timeout: float
) -> None:
    """Add a user."""
    name, colon, inline = name_password.partition(":")
    if not name:
        fail("the user needs a name: raftkv user add NAME[:PASSWORD]")
    password = "" if no_password else _new_password(name, inline if colon else new_user_password)

    async def op(c: Any) -> Any:
        return await c.auth.user_add(name, password, no_password=no_password)

    client_call(endpoints, timeout, op)
    click.echo(f"User {name} created")


@user.command(name="delete")
@endpoints_option
@click.argument("name")
@_timeout
def user_delete(endpoints: str | None, name: str, timeout: float) -> None:
    """Delete a user (its tokens stop working)."""

    async def op(c: Any) -> Any:
        return await c.auth.user_delete(name)

    client_call(endpoints, timeout, op)
    click.echo(f"User {name} deleted")


@user.command(name="list")
@endpoints_option
@_timeout
def user_list(endpoints: str | None, timeout: float) -> None:
    """Every user, one a line."""

    async def op(c: Any) -> Any:
        return await c.auth.user_list()

    for name in client_call(endpoints, timeout, op):
        click.echo(name)


@user.command(name="get")
@endpoints_option
@click.argument("name")
@click.option("--detail", is_flag=True, help="Also show each role's permissions.")
@_timeout
def user_get(endpoints: str | None, name: str, detail: bool, timeout: float) -> None:
    """A user's roles."""

    async def op(c: Any) -> Any:
        got = await c.auth.user_get(name)
        roles = [await c.auth.role_get(r) for r in got.roles] if detail else []
        return got, roles

    got, roles = client_call(endpoints, timeout, op)
    click.echo(f"User: {got.name}")
    if not detail:
        click.echo(f"Roles: {' '.join(got.roles)}")
    for role in roles:
        _print_role(role)


@user.command(name="passwd")
@endpoints_option
@click.argument("name")
@click.option("--new-user-password", default=None, help="The new password (else asked on the terminal).")
@_timeout
def user_passwd(endpoints: str | None, name: str, new_user_password: str | None, timeout: float) -> None:
    """Change a user's password (its earlier tokens stop working)."""
    password = _new_password(name, new_user_password)

    async def op(c: Any) -> Any:
        return await c.auth.user_change_password(name, password)

    client_call(endpoints, timeout, op)
    click.echo("Password updated")


@user.command(name="grant-role")
@endpoints_option
@click.argument("name")
@click.argument("role")
@_timeout
def user_grant_role(endpoints: str | None, name: str, role: str, timeout: float) -> None:
    """Give user NAME role ROLE (role root: everything)."""

    async def op(c: Any) -> Any:
        return await c.auth.user_grant_role(name, role)

    client_call(endpoints, timeout, op)
    click.echo(f"Role {role} is granted to user {name}")


@user.command(name="revoke-role")
@endpoints_option
@click.argument("name")
@click.argument("role")
@_timeout
def user_revoke_role(endpoints: str | None, name: str, role: str, timeout: float) -> None:
    """Take role ROLE from user NAME (its open watches outside what is left are cancelled)."""

    async def op(c: Any) -> Any:
        return await c.auth.user_revoke_role(name, role)

    client_call(endpoints, timeout, op)
    click.echo(f"Role {role} is revoked from user {name}")


# --- roles --------------------------------------------------------------------------------------------------


@click.group()
def role() -> None:
    """Roles: add, delete, list, get, grant-permission, revoke-permission."""


@role.command(name="add")
@endpoints_option
@click.argument("name")
@_timeout
def role_add(endpoints: str | None, name: str, timeout: float) -> None:
    """Add a role (with no permission yet)."""

    async def op(c: Any) -> Any:
        return await c.auth.role_add(name)

    client_call(endpoints, timeout, op)
    click.echo(f"Role {name} created")


@role.command(name="delete")
@endpoints_option
@click.argument("name")
@_timeout
def role_delete(endpoints: str | None, name: str, timeout: float) -> None:
    """Delete a role; every user that had it loses it."""

    async def op(c: Any) -> Any:
        return await c.auth.role_delete(name)

    client_call(endpoints, timeout, op)
    click.echo(f"Role {name} deleted")


@role.command(name="list")
@endpoints_option
@_timeout
def role_list(endpoints: str | None, timeout: float) -> None:
    """Every role, one a line."""

    async def op(c: Any) -> Any:
        return await c.auth.role_list()

    for name in client_call(endpoints, timeout, op):
        click.echo(name)


def _show(key: bytes, end: bytes | None) -> str:
    from raftkv.kv.keys import FROM_KEY, prefix_end

    k = key.decode(errors="backslashreplace")
    if not end:
        return k
    if end == FROM_KEY:
        return f"[{k}, <open ended>"
    e = end.decode(errors="backslashreplace")
    return f"[{k}, {e}) (prefix {k})" if key and prefix_end(key) == end else f"[{k}, {e})"


def _print_role(r: Any) -> None:
    click.echo(f"Role {r.name}")
    for kind, title in (("read", "KV Read:"), ("write", "KV Write:")):
        click.echo(title)
        for p in r.permissions:
            if p.type in (kind, "readwrite"):
                click.echo(f"\t{_show(p.key, p.range_end)}")


@role.command(name="get")
@endpoints_option
@click.argument("name")
@_timeout
def role_get(endpoints: str | None, name: str, timeout: float) -> None:
    """A role's permissions."""

    async def op(c: Any) -> Any:
        return await c.auth.role_get(name)

    _print_role(client_call(endpoints, timeout, op))


def _range(key: str, range_end: str | None, prefix: bool, from_key: bool) -> tuple[bytes, bytes | None]:
    from raftkv.kv.keys import FROM_KEY, prefix_end

    if sum((prefix, from_key, range_end is not None)) > 1:
        fail("give one of RANGE_END, --prefix and --from-key")
    k = key.encode()
    if prefix:
        return k, prefix_end(k)
    if from_key:
        return k, FROM_KEY
    return k, range_end.encode() if range_end is not None else None


@role.command(name="grant-permission")
@endpoints_option
@click.argument("name")
@click.argument("perm_type", metavar="read|write|readwrite", type=click.Choice(["read", "write", "readwrite"]))
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Every key that starts with KEY.")
@click.option("--from-key", is_flag=True, help="Every key from KEY on.")
@_timeout
def role_grant_permission(
    endpoints: str | None,
    name: str,
    perm_type: str,
    key: str,
    range_end: str | None,
    prefix: bool,
    from_key: bool,
    timeout: float,
) -> None:
    """Let role NAME read, write or readwrite KEY (or [KEY, RANGE_END), a prefix, every key from KEY)."""
    k, end = _range(key, range_end, prefix, from_key)

    async def op(c: Any) -> Any:
        return await c.auth.role_grant_permission(name, perm_type, k, end)

    client_call(endpoints, timeout, op)
    click.echo(f"Role {name} updated")


@role.command(name="revoke-permission")
@endpoints_option
@click.argument("name")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="The permission on every key that starts with KEY.")
@click.option("--from-key", is_flag=True, help="The permission on every key from KEY on.")
@_timeout
def role_revoke_permission(
    endpoints: str | None, name: str, key: str, range_end: str | None, prefix: bool, from_key: bool, timeout: float
) -> None:
    """Take from role NAME its permission on exactly that key or range (open watches lose it at once)."""
    k, end = _range(key, range_end, prefix, from_key)

    async def op(c: Any) -> Any:
        return await c.auth.role_revoke_permission(name, k, end)

    client_call(endpoints, timeout, op)
    click.echo(f"Permission of key {key} is revoked from role {name}")
