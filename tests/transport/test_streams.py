"""The dial/listen seam: one listener serves RPC (and, when asked, plain) connections and closes them all."""

from __future__ import annotations

import asyncio
from typing import Any

from raftkv.cli.local import free_ports
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.streams import PLAIN
from raftkv.transport.wire import schema


class EchoService(schema.Client.Server):  # type: ignore[misc]
    async def ping(self, header: Any, payload: Any, _context: Any, **_kw: Any) -> None:
        _context.results.payload = payload
        _context.results.nodeId = 42


class PlainRecorder(asyncio.Protocol):
    def __init__(self, seen: list[bytes]) -> None:
        self.seen = seen

    def data_received(self, data: bytes) -> None:
        self.seen.append(data)


async def test_a_listener_tells_plain_from_rpc_and_closes_every_connection() -> None:
    (port,) = free_ports(1)
    address = Address("127.0.0.1", port)
    seen: list[bytes] = []
    async with kj_loop():
        listener = await PLAIN.listen(
            address, lambda _close, _names: EchoService(), name="test", plain=lambda: PlainRecorder(seen), magic=b"MAGC"
        )
        try:
            client = await PLAIN.dial_rpc(address, timeout=2.0)
            cap = client.bootstrap().cast_as(schema.Client)
            async with asyncio.timeout(2):
                r = await cap.ping(header={"clusterId": ""}, payload=b"hi")
            assert (bytes(r.payload), r.nodeId) == (b"hi", 42)

            transport, _ = await PLAIN.dial_plain(address, asyncio.Protocol, timeout=2.0)
            transport.write(b"MAGCrest")
            async with asyncio.timeout(2):
                while b"".join(seen) != b"MAGCrest":
                    await asyncio.sleep(0.01)
        finally:
            await listener.aclose()
        async with asyncio.timeout(2):  # the listener hung up on the RPC connection it served
            await client.on_disconnect()
        assert listener.bound == []
        transport.close()
