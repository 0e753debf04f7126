"""A snapshot's configuration on the wire: the ``List(Member)`` of ``SnapshotChunk`` (and ``backupChunk``) carries
voters, learners and addresses, through a real ``installSnapshot`` between two transports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import capnp  # type: ignore[import-untyped]
import pytest

from raftkv.cli.local import free_ports
from raftkv.raft.messages import InstallSnapshot, Message
from raftkv.raft.types import ConfState, Index, Member, NodeId, SnapshotMeta, Term
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.peers import Transport
from raftkv.transport.snapshot_stream import conf_from_wire, conf_to_wire, send_snapshot
from raftkv.transport.wire import schema

CONF = ConfState(
    (
        Member(NodeId(1), "10.0.0.1:7001", "10.0.0.1:8001"),
        Member(NodeId(2), "10.0.0.2:7001", "10.0.0.2:8001"),
        Member(NodeId(7), "10.0.0.7:7001", "", learner=True),
    )
)
HEADER = {"clusterId": "prod", "from": 2, "to": 1}


@pytest.mark.parametrize("conf", [CONF, ConfState()], ids=["learners-and-addresses", "empty"])
def test_the_configuration_survives_a_snapshot_chunk_message(conf: ConfState) -> None:
    data = schema.SnapshotChunk.new_message(term=3, lastIndex=9, lastTerm=2, conf=conf_to_wire(conf)).to_bytes()
    with schema.SnapshotChunk.from_bytes(data) as chunk:
        assert conf_from_wire(chunk.conf) == conf


def test_members_out_of_order_are_refused() -> None:
    members = list(reversed(conf_to_wire(CONF)))
    with pytest.raises(ValueError, match="unique positive ids in order"):
        conf_from_wire(schema.SnapshotChunk.new_message(conf=members).conf)


async def _peer_cap(port: int) -> tuple[Any, Any]:
    stream = await capnp.AsyncIoStream.create_connection(host="127.0.0.1", port=port)
    client = capnp.TwoPartyClient(stream)
    return client, client.bootstrap().cast_as(schema.Peer)


async def test_install_snapshot_delivers_the_whole_configuration(tmp_path: Path) -> None:
    received: list[list[Message]] = []
    kept: list[tuple[SnapshotMeta, bytes]] = []

    async def snapshot_received(meta: SnapshotMeta, path: str) -> None:
        kept.append((meta, Path(path).read_bytes()))

    meta = SnapshotMeta(Index(40), Term(3), CONF)

    def source() -> tuple[SnapshotMeta, Iterator[bytes]]:
        return meta, iter([b"first chunk, ", b"second chunk"])

    async with kj_loop():
        port, other = free_ports(2)
        t = Transport(
            NodeId(1),
            "prod",
            {NodeId(1): Address("127.0.0.1", port), NodeId(2): Address("127.0.0.1", other)},
            received.append,
            lambda: 3,
            incoming_dir=str(tmp_path),
            snapshot_received=snapshot_received,
        )
        await t.listen(Address("127.0.0.1", port))
        try:
            client, cap = await _peer_cap(port)
            sent, why = await send_snapshot(cap, HEADER, Term(3), source, timeout_s=5.0)
            assert (sent, why) == (True, "")
            assert kept == [(meta, b"first chunk, second chunk")]
            assert received == [[InstallSnapshot(Term(3), NodeId(2), NodeId(1), meta)]]

            # A sender whose members are not a configuration is refused as malformed, and nothing is installed.
            chunk = {"term": 3, "lastIndex": 41, "lastTerm": 3, "offset": 0, "data": b"x", "done": True}
            chunk["conf"] = [{"id": 2}, {"id": 2}]
            r = await cap.installSnapshot(header=HEADER, chunk=chunk)
            assert str(r.error.code) == "malformed" and "unique positive ids" in str(r.error.message)
            assert len(kept) == 1 and len(received) == 1
            client.close()
        finally:
            await t.close()
