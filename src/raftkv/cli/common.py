"""What every ``raftkv`` command shares: the one-line error and its exit code, the endpoints option.

Exit codes scripts can rely on: 0 success; 1 the operation failed (unreachable, no leader, a node failure);
2 bad usage or configuration (one line on stderr says what and how to fix it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypedDict, TypeVar

import click

from raftkv.transport.address import Address, AddressError

ENDPOINTS_ENV = "RAFTKV_ENDPOINTS"
T = TypeVar("T")
log = logging.getLogger("raftkv.cli")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``raftkv: error: MESSAGE`` on stderr and exit with ``code`` (2: usage/configuration, 1: failure)."""
    click.echo(f"raftkv: error: {message}", err=True)
    sys.exit(code)


def parse_endpoints(value: str | None) -> list[Address]:
    text = value or os.environ.get(ENDPOINTS_ENV, "")
    if not text:
        fail(f"no endpoints: pass --endpoints HOST:PORT,... or set {ENDPOINTS_ENV}")
    try:
        return [Address.parse(p, "endpoint") for p in text.split(",") if p.strip()]
    except AddressError as e:
        fail(str(e))


CACERT_ENV, CERT_ENV, KEY_ENV = "RAFTKV_CACERT", "RAFTKV_CERT", "RAFTKV_KEY"
USER_ENV, PASSWORD_ENV = "RAFTKV_USER", "RAFTKV_PASSWORD"
_TLS_META = "raftkv.tls"


def _keep_tls(ctx: click.Context, param: click.Parameter, value: Path | str | None) -> None:
    if value is not None and param.name:
        ctx.meta.setdefault(_TLS_META, {})[param.name] = value


def endpoints_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--endpoints`` and, with it, etcdctl's TLS flags ``--cacert --cert --key`` and its ``--user
    --password`` (or their environment variables): every command that talks to a cluster takes them all.
    Read the others with :func:`tls_options`."""
    for name, env, text in reversed(
        (
            ("--user", USER_ENV, "Who to be once authentication is on: NAME or NAME:PASSWORD."),
            ("--password", PASSWORD_ENV, "The password of --user (asked for when a terminal is attached)."),
        )
    ):
        f = click.option(
            name, f"auth_{name[2:]}", envvar=env, expose_value=False, callback=_keep_tls, help=f"{text} (or ${env})"
        )(f)
    path = click.Path(dir_okay=False, path_type=Path)
    for name, env, text in reversed(
        (
            ("--cacert", CACERT_ENV, "CA certificate (PEM) that signed the nodes' certificates: talk TLS."),
            ("--cert", CERT_ENV, "This client's certificate (PEM), for nodes run with --client-cert-auth."),
            ("--key", KEY_ENV, "The private key of --cert (PEM)."),
        )
    ):
        f = click.option(
            name,
            f"tls_{name[2:]}",  # not "key": commands take a KEY argument
            type=path,
            envvar=env,
            expose_value=False,
            callback=_keep_tls,
            help=f"{text} (or ${env})",
        )(f)
    return click.option(
        "--endpoints", metavar="HOST:PORT,...", help=f"Client addresses of the nodes (or ${ENDPOINTS_ENV})."
    )(f)


class TLSArgs(TypedDict, total=False):
    """``raftkv.connect``'s TLS and authentication keyword arguments."""

    cacert: Path
    cert: Path
    key: Path
    user: str
    password: str


def tls_options() -> TLSArgs:
    """The TLS and authentication arguments for ``raftkv.connect`` from this command's ``--cacert --cert
    --key --user --password``; a file that does not load exits 2 with one line naming it, and so does a
    ``--user`` without a password when no terminal can ask for one."""
    given = _given_tls()
    if given:
        _client_context(given)  # the check: connect() builds its own
    ctx = click.get_current_context(silent=True)
    kept: dict[str, str] = ctx.meta.get(_TLS_META, {}) if ctx is not None else {}
    user, password = kept.get("auth_user"), kept.get("auth_password")
    if user:
        name, colon, inline = user.partition(":")
        if not name:
            fail("--user needs a name: --user NAME or --user NAME:PASSWORD")
        if colon:
            password = inline
        if password is None:
            if not sys.stdin.isatty():
                fail(f"--user {name} needs a password: --user {name}:PASSWORD, --password or ${PASSWORD_ENV}")
            password = click.prompt("Password", hide_input=True, err=True)
        given["user"], given["password"] = name, password or ""
    elif password is not None:
        fail("--password needs --user NAME")
    return given


def tls_streams() -> Any:
    """The stream layer for this command's TLS flags (plain TCP without them), for the calls that take one."""
    from raftkv.transport.streams import PLAIN, StreamLayer

    given = _given_tls()
    return StreamLayer(client_tls=_client_context(given)) if given else PLAIN


def _given_tls() -> TLSArgs:
    ctx = click.get_current_context(silent=True)
    kept: dict[str, Path] = ctx.meta.get(_TLS_META, {}) if ctx is not None else {}
    given = TLSArgs()
    if "tls_cacert" in kept:
        given["cacert"] = kept["tls_cacert"]
    if "tls_cert" in kept:
        given["cert"] = kept["tls_cert"]
    if "tls_key" in kept:
        given["key"] = kept["tls_key"]
    return given


def _client_context(given: TLSArgs) -> Any:
    from raftkv.transport.tls import TLSConfigError, TLSFiles, client_context

    try:
        return client_context(TLSFiles(given.get("cert"), given.get("key"), given.get("cacert")))
    except TLSConfigError as e:
        fail(str(e))


timeout_option = click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds per call.")


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def client_call(endpoints: str | None, timeout: float, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn(client)`` against the cluster: an unreachable cluster is one helpful line, any other raftkv
    error its own line; both exit 1."""
    from raftkv.client import connect
    from raftkv.errors import RaftError, Unavailable

    addrs = parse_endpoints(endpoints)
    tls = tls_options()

    async def run() -> T:
        async with connect(addrs, timeout=timeout, **tls) as client:
            return await fn(client)

    try:
        return asyncio.run(run())
    except Unavailable as e:
        shown = ",".join(map(str, addrs))
        if "TLS" in e.last_error:  # the cluster may be fine: this client's TLS settings are not
            fail(f"no leader reachable at {shown}: {e.last_error}", code=1)
        if tls:  # TLS 1.3: a node refusing the client's certificate shows as a closed connection
            fail(
                f"no leader reachable at {shown}: is the cluster running, and does it accept this client's "
                "certificate (--cert/--key, signed by the nodes' --trusted-ca-file)? try raftkv status",
                code=1,
            )
        fail(f"no leader reachable at {shown}: is the cluster running? try raftkv status", code=1)
    except RaftError as e:
        fail(str(e), code=1)
