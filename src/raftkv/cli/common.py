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
from typing import Any, NoReturn, TypeVar

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


endpoints_option = click.option(
    "--endpoints", metavar="HOST:PORT,...", help=f"Client addresses of the nodes (or ${ENDPOINTS_ENV})."
)
timeout_option = click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds per call.")


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def client_call(endpoints: str | None, timeout: float, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn(client)`` against the cluster: an unreachable cluster is one helpful line, any other raftkv
    error its own line; both exit 1."""
    from raftkv.client import connect
    from raftkv.errors import RaftError, Unavailable

    addrs = parse_endpoints(endpoints)

    async def run() -> T:
        async with connect(addrs, timeout=timeout) as client:
            return await fn(client)

    try:
        return asyncio.run(run())
    except Unavailable:
        shown = ",".join(map(str, addrs))
        fail(f"no leader reachable at {shown}: is the cluster running? try raftkv status", code=1)
    except RaftError as e:
        fail(str(e), code=1)
