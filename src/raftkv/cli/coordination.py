"""``raftkv lock NAME [-- COMMAND ARGS...]`` and ``raftkv elect NAME PROPOSAL`` / ``--listen`` (etcdctl's names).

Both hold a lease kept alive in the background (``--ttl`` seconds, default 10). If it is lost while held (the
cluster unreachable for a whole TTL), the command says so and exits with code 1; a COMMAND run under the lock
is terminated first, since it may no longer hold it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import click

from raftkv.cli.common import endpoints_option, fail, parse_endpoints
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
        async with connect(addrs) as c, c.lock(name, ttl=ttl) as held:
            key = held.key.decode(errors="backslashreplace")
            click.echo(key)
            lost = asyncio.ensure_future(held.lost.wait())
            if not command:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await asyncio.wait({lost, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
                if held.lost.is_set():
                    fail(f"lost the lock {name!r}: its lease expired or the cluster was unreachable", code=1)
                return 0
            env = dict(os.environ, RAFTKV_LOCK_KEY=key, RAFTKV_LOCK_TOKEN=str(held.token))
            proc = await asyncio.create_subprocess_exec(*command, env=env)
            finished = asyncio.ensure_future(proc.wait())
            await asyncio.wait({lost, finished}, return_when=asyncio.FIRST_COMPLETED)
            if not finished.done():
                proc.terminate()
                await proc.wait()
                fail(f"lost the lock {name!r} while {command[0]} ran: it was terminated", code=1)
            lost.cancel()
            return int(finished.result())

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
        async with connect(addrs) as c:
            election = c.election(name, ttl=ttl)
            if listen:
                async for value in election.observe():
                    click.echo(value.decode(errors="backslashreplace"))
                return 0
            assert proposal is not None
            await election.campaign(proposal)
            try:
                click.echo(f"{election.key.decode(errors='backslashreplace')} {proposal}")
                await election.lost.wait()
                fail(f"lost the leadership of {name!r}: its lease expired or the cluster was unreachable", code=1)
            finally:
                await election.resign()

    sys.exit(_run(run()))
