"""``Router``: a cluster's endpoints, one pooled connection to each, and the client's one retry loop.

Theory of operation
-------------------
Everything that needs "some node, preferably the leader" goes through :meth:`Router.run`: KV batches, the
generic ``propose``, and the start (and resume) of a watch. Each attempt goes to the leader the router knows of,
or else to the next endpoint in turn. A ``notLeader`` answer that names the leader's address is followed at
once; a retryable answer (:data:`raftkv.client.errors.RETRYABLE`: outcome unknown, the same request is safe to
send again) or a broken connection makes the router forget that leader (and drop the connection) and try again
after a brisk backoff: an election takes ~0.2 s, and a client polling 3 endpoints every 50 ms costs nothing.
Any other answer is final and reaches the caller. At the deadline the loop gives up with
:class:`~raftkv.errors.Unavailable`, naming the endpoints and the last thing that went wrong.

The router learns the leader only from redirections, never from a success: a serializable read succeeds on a
follower too.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

from raftkv.client.connection import BROKEN, Connection, explain
from raftkv.client.errors import RETRYABLE
from raftkv.errors import NotLeader, Unavailable
from raftkv.kv.errors import InvalidToken
from raftkv.transport.address import Address, AddressError
from raftkv.transport.streams import PLAIN, StreamLayer

T = TypeVar("T")
Op = Callable[[Connection, float], Awaitable[T]]
"""One attempt of an operation: given a connection and the seconds left until the deadline."""

DIAL_TIMEOUT_S: Final = 1.0
"""At most this long to connect to one endpoint, so that a dead one leaves time to try the others."""


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...)."""
    return min(0.01 * attempt, 0.05)


class Router:
    """The endpoints of one cluster, their connections, and the leader the client was last sent to."""

    def __init__(self, endpoints: Sequence[Address], cluster_id: str = "", streams: StreamLayer = PLAIN) -> None:
        if not endpoints:
            raise ValueError("no endpoints given")
        self.endpoints = list(endpoints)
        self.cluster_id = cluster_id
        self.streams = streams
        self.leader: Address | None = None
        """Where the last redirection pointed (None: ask the endpoints in turn)."""
        self._conns: dict[Address, Connection] = {}
        self.token = ""
        """What every call carries to say who it is from (``Authenticate``'s answer; ``""``: nobody)."""
        self.reauthenticate: Callable[[float], Awaitable[None]] | None = None
        """Gets a new token (a client with a user and password sets it): before the first call, and when a node
        refuses the token."""
        self.authenticated = False
        """Whether ``reauthenticate`` ran once (it sets this)."""

    def set_token(self, token: str) -> None:
        self.token = token
        for conn in self._conns.values():
            conn.set_token(token)

    async def dial(self, endpoint: Address, timeout: float) -> Connection:
        """A new connection of the caller's own (not pooled): the caller closes it."""
        conn = Connection(endpoint, self.cluster_id, self.streams, self.token)
        await conn.open(timeout)
        return conn

    async def connection(self, endpoint: Address, timeout: float) -> Connection:
        """The pooled connection to ``endpoint``, dialled on first use."""
        conn = self._conns.get(endpoint)
        if conn is None:
            fresh = await self.dial(endpoint, timeout)
            # Two callers may dial at once (a read batch and a write batch flushed together): keep one.
            conn = self._conns.setdefault(endpoint, fresh)
            if conn is not fresh:
                fresh.close()
        return conn

    def drop(self, endpoint: Address) -> None:
        """Close the pooled connection to ``endpoint`` (the next call dials again)."""
        conn = self._conns.pop(endpoint, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for endpoint in list(self._conns):
            self.drop(endpoint)

    async def run(
        self,
        op: Op[T],
        deadline: float,
        *,
        own_connection: bool = False,
        role: str = "leader",
        authenticate: bool = True,
    ) -> T:
        """Run ``op`` on the leader (or any node that answers), retrying until ``deadline`` (monotonic).

        With ``own_connection`` each attempt gets a new connection that ``op`` keeps if it succeeds (a watch:
        its events must not queue behind KV batches, nor its end break them); a failed attempt's is closed.
        ``role`` names what was sought in the ``Unavailable`` message. ``authenticate``: get a token first if
        the client has credentials and none yet (False for the ``Authenticate`` call itself).
        """
        if authenticate and self.reauthenticate is not None and not self.authenticated:
            await self.reauthenticate(max(0.1, deadline - time.monotonic()))
        attempt = 0
        last_error = "no endpoint tried"
        tls_error = ""
        """A TLS failure seen on the way: it says what to fix even when the last attempt only ran out of time."""
        renewed = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            target = self.leader or self.endpoints[attempt % len(self.endpoints)]
            attempt += 1
            try:
                return await self._attempt(op, target, left, own_connection)
            except NotLeader as e:
                self.leader = _parse(e.leader_address)
                last_error = f"node at {target} is not the leader"
                if self.leader is not None:
                    continue  # follow the redirection at once
            except RETRYABLE as e:
                self.leader = None
                last_error = str(e)
            except BROKEN as e:
                if not own_connection:
                    self.drop(target)
                if self.leader == target:
                    self.leader = None
                last_error = f"{target}: {explain(e)}"
                if isinstance(e, ssl.SSLError) and not tls_error:
                    tls_error = last_error
            except InvalidToken:
                # The token expired (or its user changed): authenticate again, once per call, and retry.
                if self.reauthenticate is None or renewed:
                    raise
                renewed = True
                await self.reauthenticate(max(0.1, deadline - time.monotonic()))
                continue
            await asyncio.sleep(backoff(attempt))
        if tls_error and tls_error != last_error:
            last_error = f"{last_error}; before that {tls_error}"
        unknown = "; the outcome of any write in flight is unknown" if role == "leader" else ""
        raise Unavailable(
            f"no {role} reachable at {','.join(map(str, self.endpoints))} before the deadline ({last_error}){unknown}",
            last_error,
        )

    async def _attempt(self, op: Op[T], target: Address, left: float, own_connection: bool) -> T:
        dial_timeout = min(DIAL_TIMEOUT_S, left)
        if not own_connection:
            return await op(await self.connection(target, dial_timeout), left)
        conn = await self.dial(target, dial_timeout)
        try:
            return await op(conn, left)
        except BaseException:
            conn.close()
            raise


def _parse(address: str) -> Address | None:
    """A redirection's leader address; a malformed one counts as unknown (the loop then tries each endpoint)."""
    if not address:
        return None
    try:
        return Address.parse(address)
    except AddressError:
        return None
