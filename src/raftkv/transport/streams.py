"""The one seam every connection goes through: dial and listen (hashicorp/raft's ``StreamLayer``).

Theory of operation
-------------------
raftkv opens connections in two shapes, and accepts them on two kinds of port:

* **RPC** — a Cap'n Proto two-party connection (clients to nodes; a node's control connection to a peer);
* **plain** — an asyncio stream protocol of our own (the peer data plane's frames).

Every dial in the code base is :meth:`StreamLayer.dial_rpc` or :meth:`StreamLayer.dial_plain`, and every
port is a :class:`Listener` made by :meth:`StreamLayer.listen`, so that a feature about *how* bytes travel
(TLS, per-listener connection limits, fault injection) changes this module and nothing else. Both ends apply
the same Cap'n Proto limits (``raftkv.transport.wire``), and every dial has a deadline.

A listener binds every address its host resolves to (``localhost`` may be ``::1`` and ``127.0.0.1``; IPv6
sockets IPv6-only), like ``loop.create_server``, but accepts connections itself so that a port can serve both
shapes: given a ``plain`` protocol and its ``magic``, it peeks at the first bytes of each new connection
without consuming them — the magic makes it a plain connection, anything else goes to Cap'n Proto (a capnp
stream starts with its segment count minus one, a small little-endian integer, so the two never collide). A
connection that says nothing for ``sniff_timeout_s`` is closed (Cap'n Proto clients speak first).

Each accepted RPC connection gets its own bootstrap object from the listener's factory, which is handed a
function that closes that connection (a service hangs up on a peer that sent malformed input).
Invariant: after :meth:`Listener.aclose`, no socket, task or connection of the listener remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import capnp  # type: ignore[import-untyped]

from raftkv.tasks import TaskSet
from raftkv.transport.address import Address
from raftkv.transport.tls import CertNames, cert_names, is_tls_client_hello
from raftkv.transport.wire import NESTING_LIMIT, TRAVERSAL_LIMIT_WORDS

log = logging.getLogger("raftkv.transport")

_P = TypeVar("_P", bound=asyncio.Protocol)
_T = TypeVar("_T")
BootstrapFactory = Callable[[Callable[[], None], CertNames], Any]
"""Makes the capnp server object of one accepted RPC connection: its arguments close that connection, and
name whoever the connection's verified TLS client certificate names (``tls.cert_names``; empty without one)."""


def describe(e: BaseException) -> str:
    """One line for a connection error: its type and the first line of its text."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class StreamLayer:
    """How this process opens and accepts connections: plain TCP, or TLS with the contexts given
    (:mod:`raftkv.transport.tls`): ``server_tls`` for the ports it listens on, ``client_tls`` for its dials."""

    def __init__(
        self,
        server_tls: ssl.SSLContext | None = None,
        client_tls: ssl.SSLContext | None = None,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        self.server_tls = server_tls
        self.client_tls = client_tls
        self.handshake_timeout_s = handshake_timeout_s

    def replace_tls(self, server_tls: ssl.SSLContext | None, client_tls: ssl.SSLContext | None) -> None:
        """New contexts (certificates reloaded, SIGHUP) for the connections made from now on; the open ones
        keep theirs. TLS cannot be turned on or off this way: a layer that has none keeps none."""
        if (server_tls is None) != (self.server_tls is None) or (client_tls is None) != (self.client_tls is None):
            raise ValueError("TLS cannot be turned on or off without a restart")
        self.server_tls = server_tls
        self.client_tls = client_tls

    def _dial_tls(self, address: Address, timeout: float, name: str | None) -> dict[str, Any]:
        if self.client_tls is None:
            return {}
        # The certificate must carry the name checked: the host dialled (an IP address in its SANs, or a DNS
        # name), or the member name a peer link expects (``tls.member_name``).
        hostname = name or address.host
        return {"ssl": self.client_tls, "server_hostname": hostname, "ssl_handshake_timeout": max(timeout, 0.1)}

    async def dial_rpc(self, address: Address, timeout: float, *, name: str | None = None) -> Any:
        """A Cap'n Proto two-party client connected to ``address`` (``TimeoutError`` after ``timeout`` s); under
        TLS the node's certificate must name ``name`` (default: the host dialled).

        ``client.bootstrap().cast_as(schema.X)`` gives the remote capability; ``client.close()`` hangs up.
        """
        async with asyncio.timeout(timeout):
            if self.client_tls is None:
                stream = await capnp.AsyncIoStream.create_connection(host=address.host, port=address.port)
            else:
                # Over TLS, pycapnp gets a socketpair and a relay carries its bytes (Listener._chosen says why).
                tls_side, pair = _Relay.pair()
                await asyncio.get_running_loop().create_connection(
                    lambda: tls_side, host=address.host, port=address.port, **self._dial_tls(address, timeout, name)
                )
                stream = await _relayed(tls_side, pair, lambda sock: capnp.AsyncIoStream.create_connection(sock=sock))
        return capnp.TwoPartyClient(stream, traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS, nesting_limit=NESTING_LIMIT)

    async def dial_plain(
        self, address: Address, protocol: Callable[[], _P], timeout: float, *, name: str | None = None
    ) -> tuple[asyncio.Transport, _P]:
        """A plain stream to ``address`` driven by ``protocol`` (``TimeoutError`` after ``timeout`` s); ``name``
        as for :meth:`dial_rpc`."""
        async with asyncio.timeout(timeout):
            transport, proto = await asyncio.get_running_loop().create_connection(
                protocol, host=address.host, port=address.port, **self._dial_tls(address, timeout, name)
            )
        return transport, proto

    async def listen(
        self,
        address: Address,
        bootstrap: BootstrapFactory,
        *,
        name: str,
        plain: Callable[[], asyncio.Protocol] | None = None,
        magic: bytes = b"",
        sniff_timeout_s: float = 10.0,
        max_connections: int = 0,
    ) -> Listener:
        """Accept RPC connections on ``address`` (and plain ones that start with ``magic``, if ``plain``); with
        ``max_connections``, a connection beyond that many open ones is closed at once (``--max-connections``)."""
        listener = Listener(name, bootstrap, plain, magic, sniff_timeout_s, self, self.handshake_timeout_s)
        listener.max_connections = max_connections
        await listener.bind(address)
        return listener


PLAIN = StreamLayer()
"""Plain TCP, the default stream layer."""


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Listener:
    """One listening port: its sockets, its accept and sniff tasks, and the connections it serves."""

    def __init__(
        self,
        name: str,
        bootstrap: BootstrapFactory,
        plain: Callable[[], asyncio.Protocol] | None,
        magic: bytes,
        sniff_timeout_s: float,
        layer: StreamLayer | None = None,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        if plain is not None and not magic:
            raise ValueError("a listener for plain connections needs their magic bytes")
        self.name = name
        self._bootstrap = bootstrap
        self._plain = plain
        self._magic = magic
        self._sniff_timeout_s = sniff_timeout_s
        self._layer = layer
        """Whose ``server_tls`` each new connection gets: read at accept time, so that a context replaced by
        :meth:`StreamLayer.replace_tls` (SIGHUP) serves the next connection, and open ones keep theirs."""
        self._handshake_timeout_s = handshake_timeout_s
        self._sockets: list[socket.socket] = []
        self._tasks = TaskSet(f"listener {name}")
        self._unsniffed: set[socket.socket] = set()
        """Accepted sockets not yet handed to a protocol (closed by ``aclose`` if their sniff never ran)."""
        self._rpc_servers: set[Any] = set()
        self._served: set[asyncio.BaseTransport] = set()
        """Every connection handed to a protocol (Cap'n Proto, a frame plane, TLS), pruned as they close."""
        self._warned = False
        self.max_connections = 0
        """At most this many connections open at once (0: no limit); more are closed as they arrive."""
        self.refused_over_limit = 0
        self._limit_warned_at = -1e9

    @property
    def bound(self) -> list[tuple[str, int]]:
        """The (host, port) of every listening socket."""
        return [s.getsockname()[:2] for s in self._sockets]

    async def bind(self, address: Address) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen: set[tuple[int, Any]] = set()
        try:
            for family, kind, proto, _name, sockaddr in infos:
                if (family, sockaddr) in seen:
                    continue
                seen.add((family, sockaddr))
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
                sock.listen(128)
                sock.setblocking(False)
        except OSError:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
            raise
        for sock in self._sockets:
            self._tasks.spawn(self._accept_loop(sock), name=f"raftkv-accept-{self.name}")

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(sock)
            except OSError as e:  # e.g. out of file descriptors: keep serving the connections we have
                if not self._warned:
                    self._warned = True
                    log.warning("%s: cannot accept a connection: %s", self.name, e)
                await asyncio.sleep(0.1)
                continue
            self._warned = False
            if self.max_connections and self.open_connections() >= self.max_connections:
                self._refuse_over_limit(conn)
                continue
            conn.setblocking(False)
            self._unsniffed.add(conn)
            self._tasks.spawn(self._hand_over(conn), name=f"raftkv-conn-{self.name}")

    def open_connections(self) -> int:
        """Connections open on this port: those still being sniffed and those served."""
        live = {t for t in self._served if not t.is_closing()}
        self._served = live
        return len(self._unsniffed) + len(live)

    def _refuse_over_limit(self, conn: socket.socket) -> None:
        self.refused_over_limit += 1
        now = time.monotonic()
        if now - self._limit_warned_at >= 10.0:  # one line per 10 s however many are refused: no log flood
            self._limit_warned_at = now
            log.warning(
                "%s: refused a connection from %s: %d connections are open, the limit (--max-connections %d); "
                "%d refused so far",
                self.name,
                _peer_of(conn),
                self.open_connections(),
                self.max_connections,
                self.refused_over_limit,
            )
        conn.close()

    async def _hand_over(self, conn: socket.socket) -> None:
        """Give an accepted socket to Cap'n Proto or to the plain protocol (by its first bytes, when needed)."""
        loop = asyncio.get_running_loop()
        peer = _peer_of(conn)  # before a failed handshake closes it
        tls = self._layer.server_tls if self._layer is not None else None
        try:
            if tls is not None:
                await self._hand_over_tls(conn, tls)
                return
            plain = self._plain
            if plain is not None:
                head = await self._sniff(conn)
                if not head:
                    conn.close()
                    return
                if is_tls_client_hello(head):
                    log.warning(
                        "%s: refused a TLS connection from %s: this port does not serve TLS (start the node "
                        "with --cert-file and --key-file, or connect without TLS)",
                        self.name,
                        peer,
                    )
                    conn.close()
                    return
                if head == self._magic:
                    transport, _proto = await loop.connect_accepted_socket(plain, conn)
                    self._track(transport)
                    return
            # What capnp.AsyncIoStream.create_server does for each connection it accepts (pycapnp's own
            # protocol factory; pyproject pins pycapnp below 3 for this private name).
            transport, _ = await loop.connect_accepted_socket(
                lambda: capnp.AsyncIoStream._connect(self._serve_rpc), conn
            )
            self._track(transport)
        except ssl.SSLError as e:
            # A client that does not speak TLS, or one whose certificate the CA did not sign: one line, then
            # the connection is closed (the handshake never completed, so nothing was served).
            log.warning("%s: refused a connection from %s: TLS handshake failed: %s", self.name, peer, e)
            conn.close()
        except (TimeoutError, OSError) as e:
            log.debug("%s: dropped a connection before it spoke: %s", self.name, describe(e))
            conn.close()
        except Exception as e:  # e.g. the KJ loop is gone: this connection only
            log.warning("%s: could not serve a connection: %s", self.name, describe(e))
            conn.close()
        except BaseException:
            conn.close()
            raise
        finally:
            self._unsniffed.discard(conn)

    async def _hand_over_tls(self, conn: socket.socket, tls: ssl.SSLContext) -> None:
        """TLS first (the handshake), then the same choice by the first bytes, read inside TLS."""
        loop = asyncio.get_running_loop()
        sniffer = _TLSSniffer(self)
        transport, _ = await loop.connect_accepted_socket(
            lambda: sniffer, conn, ssl=tls, ssl_handshake_timeout=self._handshake_timeout_s
        )
        self._track(transport)

    def _track(self, transport: asyncio.BaseTransport) -> None:
        self._served.add(transport)
        if len(self._served) % 64 == 0:
            self.open_connections()  # prune the closed ones now and then

    def _chosen(self, buffered: bytes, transport: asyncio.Transport) -> asyncio.Protocol | None:
        """The protocol for a TLS connection whose first bytes are ``buffered`` (None: too few bytes yet)."""
        magic = self._magic
        if self._plain is not None and len(buffered) < len(magic) and magic.startswith(buffered):
            return None
        if self._plain is not None and buffered.startswith(magic):
            return self._plain()
        names = cert_names(transport.get_extra_info("peercert"))
        # Cap'n Proto never runs on the TLS transport itself: pycapnp's protocol crashed the process (SIGSEGV)
        # when a TLS stream broke under it (torture --peer-tls, seed 211: a lossy link, then the connection
        # reset). It gets one end of a socketpair, the plain transport it is tested on, and a relay carries
        # the bytes between the other end and TLS (_Relay). Only control traffic takes this extra hop: the
        # hot paths are frames, which run on the TLS transport directly.
        serve = functools.partial(self._serve_rpc, names=names)
        tls_side, pair = _Relay.pair()

        async def attach() -> None:
            loop = asyncio.get_running_loop()
            try:
                await _relayed(
                    tls_side,
                    pair,
                    lambda sock: loop.connect_accepted_socket(lambda: capnp.AsyncIoStream._connect(serve), sock),
                )
            except Exception as e:  # the loop or the KJ loop is going away: this connection only
                log.debug("%s: could not relay a TLS connection to Cap'n Proto: %s", self.name, describe(e))

        self._tasks.spawn(attach(), name=f"raftkv-tls-relay-{self.name}")
        return tls_side

    async def _sniff(self, conn: socket.socket) -> bytes:
        """The first ``len(magic)`` bytes of ``conn``, peeked (not consumed); b"" if it closed first."""
        loop = asyncio.get_running_loop()
        want = len(self._magic)
        pause = 0.001
        async with asyncio.timeout(self._sniff_timeout_s):
            while True:
                readable: asyncio.Future[None] = loop.create_future()
                loop.add_reader(conn.fileno(), _set_once, readable)
                try:
                    await readable
                finally:
                    loop.remove_reader(conn.fileno())
                head = conn.recv(want, socket.MSG_PEEK)
                if len(head) == want or not head:
                    return head
                # A partial first segment: the rest is normally on its way; back off for a peer that stalls.
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.1)

    async def _serve_rpc(self, stream: Any, names: CertNames = CertNames()) -> None:  # noqa: B008 - immutable
        server: Any = None

        def close() -> None:
            if server is not None:
                with contextlib.suppress(Exception):
                    server.close()

        server = capnp.TwoPartyServer(
            stream,
            bootstrap=self._bootstrap(close, names),
            traversal_limit_in_words=TRAVERSAL_LIMIT_WORDS,
            nesting_limit=NESTING_LIMIT,
        )
        self._rpc_servers.add(server)
        try:
            await server.on_disconnect()
        except asyncio.CancelledError:
            # The event loop is shutting down under us. This task belongs to pycapnp's accept callback, which
            # would print the cancellation as an error: end quietly, there is nobody to tell.
            pass
        except Exception as e:  # a connection ending badly concerns that connection only
            log.debug("%s: connection ended: %s", self.name, describe(e))
        finally:
            self._rpc_servers.discard(server)

    async def aclose(self) -> None:
        """Stop accepting and close every connection this listener serves. Idempotent."""
        await self._tasks.aclose()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        for conn in list(self._unsniffed):
            conn.close()
        self._unsniffed.clear()
        for transport in list(self._served):
            transport.close()
        self._served.clear()
        for server in list(self._rpc_servers):
            with contextlib.suppress(Exception):
                server.close()
        self._rpc_servers.clear()


def _peer_of(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
    except OSError:
        return "a client that left"
    return f"{host}:{port}"


class _TLSSniffer(asyncio.Protocol):
    """The first protocol of an accepted TLS connection: once the first bytes are in, it hands the transport
    to the protocol they call for (a frame plane's or Cap'n Proto's) and replays them to it. A connection that
    says nothing for the listener's sniff timeout is closed."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - the loop gives one
            raise TypeError(f"a stream transport is needed, got {type(transport).__name__}")
        self.transport = transport
        timeout = self.listener._sniff_timeout_s
        self.timer = asyncio.get_running_loop().call_later(timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        transport = self.transport
        if transport is None:
            return
        proto = self.listener._chosen(self.buf, transport)
        if proto is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None
        transport.set_protocol(proto)
        proto.connection_made(transport)
        _replay(proto, self.buf)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None


def _replay(proto: asyncio.BaseProtocol, data: bytes) -> None:
    """Give ``data`` to ``proto`` as if the transport had just read it (pycapnp's protocol is a buffered one)."""
    if isinstance(proto, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buf = memoryview(proto.get_buffer(len(view)))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            proto.buffer_updated(n)
            view = view[n:]
    elif isinstance(proto, asyncio.Protocol):
        proto.data_received(data)


async def _relayed(tls_side: _Relay, pair: _Relay, on_capnp_end: Callable[[socket.socket], Awaitable[_T]]) -> _T:
    """Connect ``pair`` (the relay's far side from ``tls_side``) to one end of a new socketpair and hand the other
    end to pycapnp through ``on_capnp_end``; if anything fails, close both sides and both ends, and re-raise."""
    local, remote = socket.socketpair()
    try:
        local.setblocking(False)
        remote.setblocking(False)
        await asyncio.get_running_loop().connect_accepted_socket(lambda: pair, local)
        return await on_capnp_end(remote)
    except BaseException:
        tls_side.close()
        local.close()
        remote.close()
        raise


class _Relay(asyncio.Protocol):
    """One side of a byte relay between a TLS transport and a socketpair end that pycapnp reads (see
    ``Listener._chosen``). What one side receives, the other writes; what one side cannot send fast enough
    pauses the other's reading; either side closing closes both. Bytes that arrive before the other side is
    connected wait in ``pending``."""

    def __init__(self) -> None:
        self.other: _Relay | None = None
        self.transport: asyncio.Transport | None = None
        self.pending = bytearray()
        self.closed = False

    @staticmethod
    def pair() -> tuple[_Relay, _Relay]:
        a, b = _Relay(), _Relay()
        a.other, b.other = b, a
        return a, b

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - the loop gives one
            raise TypeError(f"a stream transport is needed, got {type(transport).__name__}")
        if self.closed:
            transport.close()
            return
        self.transport = transport
        if self.pending:
            transport.write(bytes(self.pending))
            self.pending.clear()

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        elif not self.closed:
            self.pending += data

    def data_received(self, data: bytes) -> None:
        if self.other is not None:
            self.other.send(data)

    def eof_received(self) -> bool:
        return False  # close this side; connection_lost closes the other

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.close()

    def pause_writing(self) -> None:
        other = self.other.transport if self.other is not None else None
        if other is not None:
            other.pause_reading()

    def resume_writing(self) -> None:
        other = self.other.transport if self.other is not None else None
        if other is not None:
            other.resume_reading()

    def close(self) -> None:
        """Close both sides (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if self.other is not None:
            self.other.close()
