"""The peer port refuses strangers and malformed input with typed errors, and closes only that connection."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import capnp  # type: ignore[import-untyped]
import pytest

from raftkv.raft.messages import Message
from raftkv.raft.types import NodeId
from raftkv.transport.address import Address
from raftkv.transport.codec import schema
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.peers import Transport
from tests.server.cluster import free_ports


async def _peer_cap(port: int) -> tuple[Any, Any]:
    stream = await capnp.AsyncIoStream.create_connection(host="127.0.0.1", port=port)
    client = capnp.TwoPartyClient(stream)
    return client, client.bootstrap().cast_as(schema.Peer)


async def test_strangers_and_malformed_input_are_refused(tmp_path: Path) -> None:
    port, other = free_ports(2)
    received: list[list[Message]] = []
    async with kj_loop():
        t = Transport(
            NodeId(1),
            "prod",
            {NodeId(1): Address("127.0.0.1", port), NodeId(2): Address("127.0.0.1", other)},
            received.append,
            lambda: 7,
        )
        await t.listen(Address("127.0.0.1", port))
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
