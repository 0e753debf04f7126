"""The client data plane, both ends over a real socket, with a scripted executor in place of the KV service."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from raftkv.client.frames import ExecuteChannel
from raftkv.errors import NotLeader
from raftkv.kvserver import frames_api
from raftkv.kvserver.frames_api import ExecuteFrames
from raftkv.transport.wire import schema

HEADER: Any = schema.Header.new_message(clusterId="c").as_reader()


@dataclass(frozen=True)
class Req:
    command: bytes
    serializable: bool = False


@dataclass
class Scripted:
    """Answers each call with its commands reversed, once the test releases it (``gates[command]``)."""

    gates: dict[bytes, asyncio.Event] = field(default_factory=dict)
    running: int = 0
    most_running: int = 0
    cancelled: int = 0
    seen: list[tuple[str, list[tuple[bytes, bool]], int]] = field(default_factory=list)
    cert_user: str = ""

    async def execute_into(
        self, cluster: str, requests: Sequence[tuple[bytes, bool]], timeout_ms: int, r: Any, token: str = ""
    ) -> None:
        self.seen.append((cluster, list(requests), timeout_ms))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            gate = self.gates.get(requests[0][0]) if requests else None
            if gate is not None:
                await gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        if requests and requests[0][0] == b"not-leader":
            r.error.code = "notLeader"
            r.error.leaderId = 3
            r.error.message = "ask node 3"
            return
        out = r.init("results", len(requests))
        for k, (command, _serializable) in enumerate(requests):
            out[k] = command[::-1]


@dataclass
class Plane:
    executor: Scripted
    server: ExecuteFrames
    channel: ExecuteChannel
    transport: asyncio.Transport


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    loop = asyncio.get_running_loop()
    executor = Scripted()
    servers: list[ExecuteFrames] = []

    def protocol() -> ExecuteFrames:
        servers.append(ExecuteFrames(executor, node_id=1))
        return servers[-1]

    listener = await loop.create_server(protocol, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    transport, channel = await loop.create_connection(ExecuteChannel, "127.0.0.1", port)
    try:
        await _until(lambda: bool(servers))
        yield Plane(executor, servers[0], channel, transport)
    finally:
        channel.close()
        listener.close()
        await listener.wait_closed()


async def _until(cond: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_a_call_carries_its_arguments_and_gets_its_results(plane: Plane) -> None:
    _id, answer = plane.channel.call(HEADER, [Req(b"abc"), Req(b"xy", serializable=True)], 1234)
    assert await asyncio.wait_for(answer, 5) == [b"cba", b"yx"]
    assert plane.executor.seen == [("c", [(b"abc", False), (b"xy", True)], 1234)]


async def test_answers_come_back_in_any_order_and_each_reaches_its_caller(plane: Plane) -> None:
    slow = plane.executor.gates[b"slow"] = asyncio.Event()
    _a, first = plane.channel.call(HEADER, [Req(b"slow")], 5000)
    _b, second = plane.channel.call(HEADER, [Req(b"fast")], 5000)
    assert await asyncio.wait_for(second, 5) == [b"tsaf"]
    assert not first.done()  # the later call was answered first
    slow.set()
    assert await asyncio.wait_for(first, 5) == [b"wols"]


async def test_an_error_answer_raises_the_clients_exception(plane: Plane) -> None:
    _id, answer = plane.channel.call(HEADER, [Req(b"not-leader")], 5000)
    with pytest.raises(NotLeader) as e:
        await asyncio.wait_for(answer, 5)
    assert e.value.leader_hint == 3


async def test_past_the_in_flight_limit_the_node_stops_reading_until_a_call_ends(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frames_api, "MAX_IN_FLIGHT", 4)
    gate = plane.executor.gates[b"held"] = asyncio.Event()
    answers = [plane.channel.call(HEADER, [Req(b"held")], 5000)[1] for _ in range(10)]
    await _until(lambda: plane.executor.running == 4)
    await asyncio.sleep(0.05)  # time for more calls to start, were the limit not kept
    assert plane.executor.running == 4 and not plane.server.reading
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*answers), 5) == [[b"dleh"]] * 10
    assert plane.executor.most_running == 4
    assert plane.server.reading


async def test_a_frame_that_does_not_decode_closes_the_connection_and_fails_the_calls_in_flight(
    plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    plane.executor.gates[b"held"] = asyncio.Event()
    _id, answer = plane.channel.call(HEADER, [Req(b"held")], 5000)
    await _until(lambda: plane.executor.running == 1)
    # DEBUG too: the first malformed frame of a kind in this process is a warning, later ones are debug
    # (frames_api rate-limits them), and another test may have sent the first.
    with caplog.at_level(logging.DEBUG, logger="raftkv.client"):
        plane.transport.write(struct.pack("<I", 8) + b"\xff" * 8)  # a length, then bytes that are no message
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(answer, 5)
    assert "malformed client data plane frame" in caplog.text
    await _until(lambda: plane.executor.cancelled == 1)  # the node stopped working for the lost connection
    assert not plane.channel.usable
    with pytest.raises(ConnectionResetError):
        plane.channel.call(HEADER, [Req(b"x")], 5000)  # fails at once, not at the deadline


async def test_a_frame_over_the_size_limit_closes_the_connection(plane: Plane) -> None:
    _id, answer = plane.channel.call(HEADER, [Req(b"x")], 5000)
    assert await asyncio.wait_for(answer, 5) == [b"x"]
    plane.transport.write(struct.pack("<I", 2**31))
    await _until(lambda: not plane.channel.usable)
    assert "closed" in plane.channel.broken


async def test_closing_the_channel_fails_its_waiting_calls_at_once(plane: Plane) -> None:
    plane.executor.gates[b"held"] = asyncio.Event()
    _id, answer = plane.channel.call(HEADER, [Req(b"held")], 5000)
    plane.channel.close()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(answer, 1)
