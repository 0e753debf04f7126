"""Hostile clients against one node's client port (issue 17): each attack returns what the node did, one line,
and raises ``AssertionError`` if the node did not refuse it. ``tests/e2e/test_hostile.py`` runs them against
real processes; ``bench/hostile.py`` runs each beside a write loop and quotes its p99 and the node's memory.

Plain sockets in threads, bounded everywhere (every wait has a deadline, every loop a count): an attack never
hangs the caller. They use the wire format directly, because the point is what the project's own client would
never send.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import msgspec

from raftkv.kv.commands import ErrorResult, decode_result
from raftkv.kv.errors import ErrorCode
from raftkv.transport.address import Address
from raftkv.transport.frames import CLIENT_FRAME_MAGIC, frame
from raftkv.transport.wire import schema

Attack = Callable[[Address], str]


def _dial(addr: Address, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection((addr.host, addr.port), timeout=timeout)
    s.settimeout(timeout)
    return s


def _ended(s: socket.socket, within: float = 5.0) -> str:
    """How ``s`` ended within ``within`` seconds: "closed" (EOF: the node closed it), "reset" (the node, or the
    kernel under a flood, reset it) or "" (still open); what the node sends is drained."""
    s.settimeout(min(0.2, within))
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if not s.recv(65536):
                return "closed"
        except TimeoutError:
            continue
        except OSError:
            return "reset"
    return ""


def _closed_by_node(s: socket.socket, within: float = 5.0) -> bool:
    """Whether the node closes ``s`` (EOF or reset) within ``within`` seconds."""
    return bool(_ended(s, within))


def random_bytes(addr: Address, connections: int = 50) -> str:
    rng = random.Random(1)
    closed = 0
    for _ in range(connections):
        with _dial(addr) as s:
            garbage = bytearray(rng.randbytes(4096))
            garbage[:4] = b"\xff\xff\xff\x7f"  # not the frame magic, and a capnp header announcing 2^31 segments
            with suppress(OSError):
                s.sendall(garbage)
            closed += _closed_by_node(s)
    assert closed == connections, f"only {closed} of {connections} garbage connections were closed by the node"
    return f"{connections} connections of random bytes: all closed by the node"


def giant_segment(addr: Address) -> str:
    with _dial(addr) as s:
        # One segment of 2^31 - 1 words (16 GiB): the reader must refuse it before allocating anything.
        s.sendall(struct.pack("<II", 0, 0x7FFFFFFF) + b"\0" * 4096)
        assert _closed_by_node(s), "a capnp message announcing a 16 GiB segment was not refused"
    return "a capnp message announcing a 16 GiB segment: connection closed"


def truncated_frames(addr: Address) -> str:
    with _dial(addr) as s:  # a frame longer than the 64 MiB bound: closed before anything is read
        s.sendall(CLIENT_FRAME_MAGIC + struct.pack("<I", 1 << 30) + b"x" * 100)
        assert _closed_by_node(s), "a frame announcing 1 GiB was not refused"
    for _ in range(20):  # frames cut short, then the client goes: nothing may stay behind
        with _dial(addr) as s:
            s.sendall(CLIENT_FRAME_MAGIC + struct.pack("<I", 100_000) + b"y" * 1000)
    with _dial(addr) as s:  # a whole frame that is not an ExecuteCall
        s.sendall(CLIENT_FRAME_MAGIC + frame(b"\x01\x02\x03" * 33))
        assert _closed_by_node(s), "a malformed frame did not close its connection"
    return "a 1 GiB frame, 20 frames cut short, a malformed frame: refused, each connection closed"


def idle_connections(addr: Address, count: int = 2000, hold_s: float = 0.0) -> str:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            try:
                socks.append(_dial(addr, timeout=2.0))
            except OSError:
                break
        # The node accepts, and closes the ones over its limit, as fast as it can: count until the count stops
        # growing (no new close for 0.5 s once one came), within 10 s.
        ends = [""] * len(socks)
        deadline, quiet_since = time.monotonic() + 10.0, time.monotonic()
        while time.monotonic() < deadline and (not any(ends) or time.monotonic() - quiet_since < 0.5):
            for k, s in enumerate(socks):
                if not ends[k] and (end := _ended(s, within=0.001)):
                    ends[k], quiet_since = end, time.monotonic()
        if hold_s:
            time.sleep(hold_s)
    finally:
        for s in socks:
            s.close()
    closed, reset = ends.count("closed"), ends.count("reset")
    assert closed + reset > 0, f"{count} idle connections: the node closed none (is --max-connections off?)"
    return (
        f"{len(socks)} idle connections: {closed} closed by the node, {reset} reset (the accept queue "
        f"overflowed), {len(socks) - closed - reset} held"
    )


def slowloris(addr: Address, connections: int = 100, seconds: float = 3.0) -> str:
    socks = [_dial(addr) for _ in range(connections)]
    header = struct.pack("<II", 0, 1000)  # a plausible capnp message, sent one byte at a time
    try:
        for k in range(int(seconds / 0.2)):
            for s in socks:
                with suppress(OSError):
                    s.send(header[k % len(header) : k % len(header) + 1])
            time.sleep(0.2)
        closed = sum(_closed_by_node(s, within=0.01) for s in socks)
    finally:
        for s in socks:
            s.close()
    return f"{connections} connections dribbling a byte every 200 ms for {seconds:.0f} s: {closed} closed by the node"


def _frames_call(addr: Address, commands: list[bytes], timeout: float = 30.0) -> Any:
    """One ExecuteCall on the client data plane, by hand; the decoded results (or the ExecuteReturn's error)."""
    call = schema.ExecuteCall.new_message(id=7, timeoutMs=5000)
    call.header.clusterId = ""
    items = call.init("requests", len(commands))
    for k, c in enumerate(commands):
        items[k].command = c
    with _dial(addr, timeout) as s:
        s.sendall(CLIENT_FRAME_MAGIC + frame(call.to_bytes()))
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack_from("<I", buf)[0]:
            chunk = s.recv(1 << 20)
            assert chunk, "the node closed the connection instead of answering"
            buf += chunk
    with schema.ExecuteReturn.from_bytes(buf[4:], traversal_limit_in_words=1 << 30) as r:
        if str(r.error.code) != "none":
            return f"{r.error.code}: {r.error.message}"
        return [decode_result(bytes(x)) for x in r.results]


def _refused(results: Any, flag: str) -> ErrorResult:
    assert isinstance(results, list) and len(results) == 1, results
    (result,) = results
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.LIMIT_EXCEEDED, result
    assert flag in result.message, result.message
    return result


def huge_value(addr: Address) -> str:
    # Puts encoded by hand (the client refuses to build them). 3 MB: refused by size, never decoded.
    command = msgspec.msgpack.encode(["put", b"big", os.urandom(3 << 20)])
    refused = _refused(_frames_call(addr, [command]), "--max-request-bytes")
    # 50 MB: its frame is over what a node reads at all; the connection is closed before the frame is read.
    with _dial(addr) as s:
        call = schema.ExecuteCall.new_message(id=1, timeoutMs=5000)
        call.init("requests", 1)[0].command = msgspec.msgpack.encode(["put", b"huge", os.urandom(50 << 20)])
        with suppress(OSError):  # the node may close it while this is still sending
            s.sendall(CLIENT_FRAME_MAGIC + frame(call.to_bytes()))
        assert _closed_by_node(s), "a 50 MB frame was not refused"
    return f"a 3 MB put: {refused.message}; a 50 MB put: connection closed before its frame was read"


def huge_txn(addr: Address) -> str:
    command = msgspec.msgpack.encode(["txn", [], [["put", b"k", b""]] * 100_000, []])
    refused = _refused(_frames_call(addr, [command]), "--max-txn-ops")
    return f"a txn of 100,000 operations ({len(command):,} bytes): {refused.message}"


def stalled_watcher(addr: Address, write: Callable[[], None]) -> str:
    """A watcher that never returns from its first batch of events; ``write`` makes the events it should get."""
    from raftkv.client.connection import Connection
    from raftkv.transport.kjloop import kj_loop

    reasons: list[str] = []

    class Stalled(schema.Watcher.Server):  # type: ignore[misc]
        async def events(self, events: Any, _context: Any, **_kw: Any) -> None:
            await asyncio.sleep(3600)

        async def cancelled(self, reason: str, compactRevision: int, _context: Any, **_kw: Any) -> None:  # noqa: N803
            reasons.append(str(reason))

    async def run() -> None:
        async with kj_loop():
            conn = Connection(addr)
            await conn.open(5.0)
            try:
                await conn.watch(b"", b"\0", 0, Stalled(), 5.0)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20.0
                writer = loop.run_in_executor(None, write)
                while not reasons and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                await writer
            finally:
                conn.close()

    asyncio.run(run())
    assert reasons, "a watcher that never took its events was never cancelled"
    return f"a watcher that never reads: cancelled ({reasons[0]})"


ATTACKS: dict[str, Attack] = {
    "random bytes": random_bytes,
    "giant capnp segment": giant_segment,
    "truncated frames": truncated_frames,
    "2,000 idle connections": idle_connections,
    "slowloris": slowloris,
    "3 MB and 50 MB values": huge_value,
    "100k-op txn": huge_txn,
}
"""Every attack but the stalled watcher (which needs writes to watch: ``stalled_watcher``)."""
