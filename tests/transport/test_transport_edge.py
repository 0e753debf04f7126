"""The peer port refuses strangers and malformed input with typed errors, and closes only that connection."""

from __future__ import annotations

import asyncio
import faulthandler
import socket
from pathlib import Path
from typing import Any

import capnp  # type: ignore[import-untyped]
import pytest

from raftkv.cli.local import free_ports
from raftkv.raft.messages import Message, TimeoutNow
from raftkv.raft.types import NodeId, Term
from raftkv.transport.address import Address
from raftkv.transport.frames import FRAME_MAGIC, FrameSender
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.peers import Transport, TransportSettings
from raftkv.transport.wire import MAX_FRAME_BYTES, schema


async def _peer_cap(port: int) -> tuple[Any, Any]:
    stream = await capnp.AsyncIoStream.create_connection(host="127.0.0.1", port=port)
    client = capnp.TwoPartyClient(stream)
    return client, client.bootstrap().cast_as(schema.Peer)


async def _listening_node1(received: list[list[Message]]) -> tuple[Transport, int]:
    """Node 1 of cluster "prod" (members 1 and 2), listening; what it receives goes to ``received``."""
    port, other = free_ports(2)
    t = Transport(
        NodeId(1),
        "prod",
        {NodeId(1): Address("127.0.0.1", port), NodeId(2): Address("127.0.0.1", other)},
        received.append,
        lambda: 7,
    )
    await t.listen(Address("127.0.0.1", port))
    return t, port


async def test_strangers_and_malformed_input_are_refused(tmp_path: Path) -> None:
    received: list[list[Message]] = []
    async with kj_loop():
        t, port = await _listening_node1(received)
        try:
            client, cap = await _peer_cap(port)
            r = await cap.ping(header={"clusterId": "prod", "from": 2, "to": 1}, payload=b"hi")
            assert (str(r.error.code), bytes(r.payload), r.nodeId, r.term) == ("none", b"hi", 1, 7)

            r = await cap.ping(header={"clusterId": "staging", "from": 2, "to": 1}, payload=b"")
            assert str(r.error.code) == "wrongCluster" and "not 'staging'" in str(r.error.message)
            r = await cap.send(header={"clusterId": "prod", "from": 9, "to": 1}, messages=[])
            assert str(r.error.code) == "unknownMember"
            r = await cap.send(header={"clusterId": "prod", "from": 2, "to": 3}, messages=[])
            assert str(r.error.code) == "wrongNode"
            assert t.counters.refused == 3
            assert received == []

            # A well-formed batch is delivered ...
            request = cap.send_request()
            request.header = {"clusterId": "prod", "from": 2, "to": 1}
            request.init("messages", 1)[0].init("timeoutNow").term = 3
            assert str((await request.send()).error.code) == "none"
            assert len(received) == 1 and received[0][0].term == 3

            # ... a malformed one (entries not contiguous) is refused, counted, and closes this connection.
            request = cap.send_request()
            request.header = {"clusterId": "prod", "from": 2, "to": 1}
            ae = request.init("messages", 1)[0].init("appendEntries")
            ae.term, ae.prevIndex = 3, 5
            ae.entries = (3).to_bytes(8, "little") + (9).to_bytes(8, "little") + b"\x00" + (0).to_bytes(4, "little")
            r = await request.send()
            assert str(r.error.code) == "malformed" and "contiguous" in str(r.error.message)
            assert t.counters.malformed == 1
            async with asyncio.timeout(2):  # the node hangs up on this connection
                await client.on_disconnect()
            with pytest.raises(capnp.KjException):
                await cap.ping(header={"clusterId": "prod", "from": 2, "to": 1}, payload=b"")
            client.close()

            # Other connections are unaffected.
            client2, cap2 = await _peer_cap(port)
            r = await cap2.ping(header={"clusterId": "prod", "from": 2, "to": 1}, payload=b"again")
            assert bytes(r.payload) == b"again"
            client2.close()
        finally:
            await t.close()


def _frame(header: dict[str, object], terms: list[int]) -> bytes:
    mb = schema.MessageBatch.new_message()
    mb.header = header
    lst = mb.init("messages", len(terms))
    for k, term in enumerate(terms):
        lst[k].init("timeoutNow").term = term
    data: bytes = mb.to_bytes()
    return len(data).to_bytes(4, "little") + data


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(2):
        return await reader.read(1) == b""


async def test_data_plane_frames_are_delivered_and_bad_ones_close_only_their_connection() -> None:
    received: list[list[Message]] = []
    good = {"clusterId": "prod", "from": 2, "to": 1}
    async with kj_loop():
        t, port = await _listening_node1(received)
        try:
            # The magic and the first frame may arrive split anywhere: the receiver reassembles them.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            data = FRAME_MAGIC + _frame(good, [1, 2]) + _frame(good, [3])
            for piece in (data[:2], data[2:9], data[9:]):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
            async with asyncio.timeout(2):
                while sum(map(len, received)) < 3:
                    await asyncio.sleep(0.01)
            assert [m.term for batch in received for m in batch] == [1, 2, 3]
            assert all(m.src == 2 and m.dst == 1 for batch in received for m in batch)

            # A stranger's frame is refused: counted, and that connection is closed.
            writer.write(_frame({"clusterId": "prod", "from": 9, "to": 1}, [4]))
            assert await _closed_by_peer(reader)
            assert t.counters.refused == 1
            writer.close()

            # A length beyond the limit, and bytes that are not a MessageBatch: malformed, closed.
            for junk in (
                (MAX_FRAME_BYTES + 1).to_bytes(4, "little"),
                (16).to_bytes(4, "little") + b"\xff" * 16,
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(FRAME_MAGIC + junk)
                assert await _closed_by_peer(reader)
                writer.close()
            assert t.counters.malformed == 2
            assert sum(map(len, received)) == 3

            # The Cap'n Proto side of the same port is unaffected.
            client, cap = await _peer_cap(port)
            r = await cap.ping(header=good, payload=b"still here")
            assert bytes(r.payload) == b"still here"
            client.close()
        finally:
            await t.close()


@pytest.mark.parametrize("frames", [True, False], ids=["frames", "capnp-calls"])
async def test_a_link_delivers_every_message_in_order(frames: bool) -> None:
    p1, p2 = free_ports(2)
    peers = {NodeId(1): Address("127.0.0.1", p1), NodeId(2): Address("127.0.0.1", p2)}
    received: list[Message] = []
    settings = TransportSettings(frames=frames, max_batch_msgs=7)  # many small batches
    async with kj_loop():
        t1 = Transport(NodeId(1), "prod", peers, received.extend, lambda: 1, settings)
        t2 = Transport(NodeId(2), "prod", peers, lambda _m: None, lambda: 1, settings)
        await t1.listen(peers[NodeId(1)])
        await t2.listen(peers[NodeId(2)])
        try:
            t2.start()
            async with asyncio.timeout(5):
                while not t2.connected(NodeId(1)):
                    await asyncio.sleep(0.01)
                for term in range(1, 1001):
                    t2.send([TimeoutNow(Term(term), NodeId(2), NodeId(1))])
                    if term % 100 == 0:
                        await asyncio.sleep(0)
                while len(received) < 1000:
                    await asyncio.sleep(0.01)
            assert [m.term for m in received] == list(range(1, 1001))
            assert t2.counters.sent_msgs[NodeId(1)] == 1000
            assert t2.counters.sent_calls[NodeId(1)] >= 1000 // 7
        finally:
            await t2.close()
            await t1.close()


class _ClosedTransport:
    def is_closing(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        raise AssertionError("nothing may be written to a closed connection")


async def test_a_pump_whose_data_plane_closed_gives_up_instead_of_spinning() -> None:
    # Regression: the pump once went round forever, never yielding, when the connection closed with messages
    # queued (the loop froze: no ticks, no elections). A watchdog turns a hang into a failure.
    faulthandler.dump_traceback_later(20, exit=True)
    try:
        port, other = free_ports(2)
        t = Transport(
            NodeId(2),
            "prod",
            {NodeId(1): Address("127.0.0.1", port), NodeId(2): Address("127.0.0.1", other)},
            lambda _m: None,
            lambda: 1,
        )
        link = t.links[NodeId(1)]
        link.connected = True
        frames = FrameSender()
        frames.transport = _ClosedTransport()  # type: ignore[assignment]
        for term in (1, 2, 3):
            link.enqueue(TimeoutNow(Term(term), NodeId(2), NodeId(1)))
        link._write_frames(frames)  # what Transport.send's flush does
        assert not link.queue and t.counters.dropped_msgs[NodeId(1)] == 3
        link.enqueue(TimeoutNow(Term(4), NodeId(2), NodeId(1)))
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(5):
                await link._pump_frames(frames)
    finally:
        faulthandler.cancel_dump_traceback_later()


async def test_a_peer_that_refuses_the_handshake_is_retried_slowly() -> None:
    # Regression: a refused handshake skipped the backoff and reconnected in a tight loop.
    pa, pb = free_ports(2)
    peers = {NodeId(1): Address("127.0.0.1", pa), NodeId(2): Address("127.0.0.1", pb)}
    async with kj_loop():
        ours = Transport(NodeId(1), "a", peers, lambda _m: None, lambda: 1)
        stranger = Transport(NodeId(2), "b", peers, lambda _m: None, lambda: 1)  # another cluster at that address
        await stranger.listen(peers[NodeId(2)])
        try:
            ours.start()
            async with asyncio.timeout(5):
                while stranger.counters.refused == 0:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.6)
            assert stranger.counters.refused <= 2, stranger.counters.refused
            assert not ours.connected(NodeId(2))
        finally:
            await ours.close()
            await stranger.close()


async def test_the_peer_port_listens_on_every_address_of_its_host() -> None:
    (port,) = free_ports(1)
    infos = await asyncio.get_running_loop().getaddrinfo("localhost", port, type=socket.SOCK_STREAM)
    hosts = sorted({info[4][0] for info in infos})
    async with kj_loop():
        t = Transport(NodeId(1), "prod", {NodeId(1): Address("localhost", port)}, lambda _m: None, lambda: 1)
        await t.listen(Address("localhost", port))
        try:
            for host in hosts:  # 127.0.0.1, and ::1 where localhost has it
                stream = await capnp.AsyncIoStream.create_connection(host=host, port=port)
                client = capnp.TwoPartyClient(stream)
                cap = client.bootstrap().cast_as(schema.Peer)
                r = await cap.ping(header={"clusterId": "prod", "from": 1, "to": 1}, payload=host.encode())
                assert bytes(r.payload) == host.encode()
                client.close()
        finally:
            await t.close()
