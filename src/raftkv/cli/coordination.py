"""``raftkv lock NAME [-- COMMAND ARGS...]`` and ``raftkv elect NAME PROPOSAL`` / ``--listen`` (etcdctl's names).

Both hold a lease kept alive in the background (``--ttl`` seconds, default 10). If it is lost while held (the
cluster unreachable for a whole TTL), the command says so and exits with code 1; a COMMAND run under the lock
is terminated first, since it may no longer hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

import click

from raftkv.cli.common import endpoints_option, fail, parse_endpoints, tls_options
from raftkv.errors import RaftError

_ttl = click.option("--ttl", type=int, default=10, show_default=True, help="Seconds the lease lives unrefreshed.")


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except KeyboardInterrupt:
        return 0
    except RaftError as e:
        fail(str(e), code=1)


@click.command(context_settings={"ignore_unknown_options": True})
@endpoints_option
@_ttl
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def lock(endpoints: str | None, ttl: int, name: str, command: tuple[str, ...]) -> None:
    """Acquire the lock NAME, print its key, and hold it: while COMMAND runs (then exit with its code; it gets
    RAFTKV_LOCK_KEY and RAFTKV_LOCK_TOKEN, the fencing token), or until Ctrl-C."""
    from raftkv.client import connect

    if ttl < 1:
        fail(f"--ttl must be >= 1 second, not {ttl}")
    addrs = parse_endpoints(endpoints)

    async def run() -> int:
        stop = _stop_on_signals()
        async with connect(addrs, **tls_options()) as c:
            held = c.lock(name, ttl=ttl)
            if not await _until(held.acquire(), stop):
                return 0  # Ctrl-C while waiting: the place in the queue was given up
            try:
                return await _hold(held, stop)
            finally:
                await held.release()

    async def _hold(held: Any, stop: asyncio.Event) -> int:
        key = held.key.decode(errors="backslashreplace")
        click.echo(key)
        if not command:
            await _until(held.lost.wait(), stop)
            if held.lost.is_set():
                fail(f"lost the lock {name!r}: its lease expired or the cluster was unreachable", code=1)
            return 0
        env = dict(os.environ, RAFTKV_LOCK_KEY=key, RAFTKV_LOCK_TOKEN=str(held.token))
        proc = await asyncio.create_subprocess_exec(*command, env=env)
        lost = asyncio.ensure_future(held.lost.wait())
        finished = asyncio.ensure_future(proc.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({lost, finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            stopped.cancel()
        if finished.done():
            return int(finished.result())
        proc.terminate()  # the lock may be gone (or we were told to stop): the command must not run on
        await proc.wait()
        if held.lost.is_set():
            fail(f"lost the lock {name!r} while {command[0]} ran: it was terminated", code=1)
        return 130  # interrupted (SIGINT or SIGTERM), as a shell reports it

    sys.exit(_run(run()))


@click.command()
@endpoints_option
@_ttl
@click.argument("name")
@click.argument("proposal", required=False)
@click.option("--listen", is_flag=True, help="Print the leader's value, then each change, until Ctrl-C.")
def elect(endpoints: str | None, ttl: int, name: str, proposal: str | None, listen: bool) -> None:
    """Campaign in the election NAME with PROPOSAL; once leader, print it and hold until Ctrl-C. With --listen,
    observe who leads instead."""
    from raftkv.client import connect

    if listen == (proposal is not None):
        fail("give either PROPOSAL (to campaign) or --listen (to observe), not both or neither")
    addrs = parse_endpoints(endpoints)

    async def run() -> int:
        stop = _stop_on_signals()
        async with connect(addrs, **tls_options()) as c:
            election = c.election(name, ttl=ttl)
            if listen:

                async def show() -> None:
                    async for value in election.observe():
                        click.echo(value.decode(errors="backslashreplace"))

                await _until(show(), stop)
                return 0
            assert proposal is not None
            if not await _until(election.campaign(proposal), stop):
                return 0  # Ctrl-C while waiting in line: the campaign gave its place up
            try:
                click.echo(f"{election.key.decode(errors='backslashreplace')} {proposal}")
                await _until(election.lost.wait(), stop)
                if election.lost.is_set():
                    fail(f"lost the leadership of {name!r}: its lease expired or the cluster was unreachable", code=1)
                return 0
            finally:
                await election.resign()

    sys.exit(_run(run()))


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: the commands end their holding themselves (resign, release) rather
    than through asyncio.run's cancellation of the whole task."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until(coro: Any, stop: asyncio.Event) -> bool:
    """Run ``coro`` until it finishes (True; its exception propagates) or ``stop`` is set (False; it is
    cancelled and awaited)."""
    task = asyncio.ensure_future(coro)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False
