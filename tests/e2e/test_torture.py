"""The torture harness's CI slice: short runs under every fault kind, and proof that it catches a planted bug.

The long runs are ``make torture`` (``python -m tests.e2e.torture``); ``docs/torture.md`` lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from raftkv.check import Kind, Operation, cas, delete, put
from tests.e2e.harness import FaultProxy, wait_for
from tests.e2e.locks import FencedWrite, check_locks
from tests.e2e.torture import FAULT_KINDS, lost_writes, run_torture, schedule
from tests.runtime.cluster import free_ports

# --- the run's own checks, on hand-made histories (no processes) ----------------------------------------------


def test_a_final_value_overtaken_by_an_acknowledged_write_is_a_lost_write() -> None:
    history = [put(1, "k", "a", 0, 1), put(2, "k", "b", 2, 3)]
    assert lost_writes(history, {"k": "b"}) == []
    assert lost_writes(history, {"k": "a"}) == [
        "lost: key 'k' ends 'a', but the acknowledged put 'k' 'b' [2.000, 3.000] came after every write that "
        "could explain it"
    ]
    assert lost_writes(history, {})[0].startswith("lost: key 'k' ends absent")
    assert lost_writes(history, {"k": "z"}) == ["lost: key 'k' ends with 'z', which no operation wrote"]


def test_writes_of_unknown_outcome_and_failed_cas_explain_nothing_more_than_they_may() -> None:
    pending = [put(1, "k", "a", 0, 1), Operation(2, "put", "k", 2.0, None, value="b")]
    assert lost_writes(pending, {"k": "a"}) == []  # the pending put may never have happened
    assert lost_writes(pending, {"k": "b"}) == []  # or happened
    deleted = [put(1, "k", "a", 0, 1), delete(2, "k", 2, 3)]
    assert lost_writes(deleted, {}) == []
    assert lost_writes(deleted, {"k": "a"})[0].startswith("lost: key 'k' ends 'a', but the acknowledged delete")
    failed_cas = [put(1, "k", "a", 0, 1), cas(2, "k", "x", "b", False, 2, 3)]
    assert lost_writes(failed_cas, {"k": "a"}) == []
    assert lost_writes(failed_cas, {"k": "b"}) == ["lost: key 'k' ends with 'b', which no operation wrote"]
    concurrent = [put(1, "k", "a", 0, 5), put(2, "k", "b", 1, 3)]
    assert lost_writes(concurrent, {"k": "a"}) == lost_writes(concurrent, {"k": "b"}) == []


def _granted(holder: str, token: int) -> dict[str, object]:
    return {"h": holder, "ev": "acquired", "t": 0.0, "token": token}


def _wrote(holder: str, token: int, seq: int, ok: bool | None) -> dict[str, object]:
    return {"h": holder, "ev": "write", "t": 0.0, "token": token, "seq": seq, "ok": ok}


def test_the_lock_checker_accepts_fenced_writes_in_token_order() -> None:
    records = [_granted("1.1", 5), _wrote("1.1", 5, 0, True), _granted("2.1", 9), _wrote("2.1", 9, 0, True)]
    records += [_wrote("1.1", 5, 1, False)]  # holder 1 paused past its lease: its late write was refused
    fenced = [FencedWrite(5, "1.1", 0, 6), FencedWrite(9, "2.1", 0, 10)]
    rep = check_locks(records, fenced)
    assert rep.problems == []
    assert rep.stats["acquired"] == 2 and rep.stats["writes refused"] == 1


def test_the_lock_checker_reports_overlaps_shared_tokens_and_lost_or_unfenced_writes() -> None:
    records = [_granted("1.1", 5), _granted("2.1", 9)]
    overlap = [FencedWrite(5, "1.1", 0, 6), FencedWrite(9, "2.1", 0, 10), FencedWrite(5, "1.1", 1, 11)]
    assert (
        check_locks(records, overlap)
        .problems[0]
        .startswith(
            "lock-unsafe: holder 1.1 wrote with token 5 at revision 11, after holder 2.1 wrote with the later token 9"
        )
    )
    shared = check_locks([_granted("1.1", 5), _granted("2.1", 5)], [])
    assert shared.problems == ["lock-shared-token: holders 1.1 and 2.1 were both granted 5"]
    unknown = check_locks(records, [FencedWrite(7, "3.1", 0, 8)])
    assert unknown.problems[0].startswith("lock-unknown-token: the resource holds a write of holder 3.1 with token 7")
    lost = check_locks([*records, _wrote("1.1", 5, 0, True)], [])
    assert lost.problems == ["lost: holder 1.1's fenced write 5/0 was acknowledged"]
    unfenced = check_locks([*records, _wrote("1.1", 5, 0, False)], [FencedWrite(5, "1.1", 0, 6)])
    assert unfenced.problems == ["lock-unfenced: holder 1.1's write 5/0 was refused, yet applied"]
    unknown_outcome = check_locks([*records, _wrote("1.1", 5, 0, None)], [FencedWrite(5, "1.1", 0, 6)])
    assert unknown_outcome.problems == []


def test_the_fault_schedule_depends_on_the_seed_alone() -> None:
    assert schedule(7, FAULT_KINDS, 5, 30) == schedule(7, FAULT_KINDS, 5, 30)
    assert schedule(7, FAULT_KINDS, 5, 30) != schedule(8, FAULT_KINDS, 5, 30)
    kinds = {spec.kind for spec in schedule(7, FAULT_KINDS, 5, 200)}
    assert kinds == set(FAULT_KINDS)


# --- real clusters --------------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(("seed", "nodes"), [(1, 3), (2, 5)])
async def test_every_fault_kind_leaves_a_linearizable_history_and_loses_nothing(
    tmp_path: Path, seed: int, nodes: int
) -> None:
    res = await run_torture(seed, 20.0, nodes, faults="all", out_dir=tmp_path, locks=3)
    assert res.ok, res.summary()
    assert res.locks["acquired"] >= 5 and res.locks["fenced writes"] >= 10, res.summary()
    assert sum(v for k, v in res.locks.items() if k.startswith("holder ")) >= 3, res.summary()
    assert res.check is not None and res.check.kind is Kind.OK
    assert res.ops >= 200, res.summary()
    assert sum(res.faults_injected.values()) >= 4, res.summary()
    assert (tmp_path / "history.jsonl").exists()
    html = (tmp_path / "history.html").read_text()
    assert res.html_path == tmp_path / "history.html" and "<html" in html, "the checker's picture, passing too"


@pytest.mark.e2e
async def test_a_lock_that_does_not_wait_in_line_is_caught(tmp_path: Path) -> None:
    """The planted lock bug (the holders' --unsafe-skip-wait: a contender holds the lock once it has queued): two
    holders write to the fenced resource in the same stretch of revisions, which the lock checker reports."""
    res = await run_torture(4, 8.0, 3, faults=("delay",), out_dir=tmp_path, locks=3, unsafe_lock=True)
    assert res.verdict == "lock-unsafe", res.summary()
    assert "--unsafe-lock" in res.replay_command()


@pytest.mark.e2e
async def test_stale_reads_on_followers_are_caught(tmp_path: Path) -> None:
    """The planted bug (RAFTKV_TEST_UNSAFE_STALE_READS=1: followers answer reads from their own state): partitions
    leave followers behind while the majority writes on, and reads pinned to them return old values."""
    res = await run_torture(3, 15.0, 3, faults=("partition",), unsafe_stale_reads=True, out_dir=tmp_path)
    assert res.check is not None and res.check.kind is Kind.ILLEGAL, res.summary()
    assert not res.ok and res.verdict == "illegal"
    assert res.html_path is not None and res.html_path.exists()


# --- the fault proxy, on an echo server (no raftkv processes) -------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def _proxied_echo() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = FaultProxy(free_ports(1)[0], server.sockets[0].getsockname()[1], rng=random.Random(1))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
        server.close()


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), 5.0)


async def test_the_proxy_delays_in_order_and_a_blackholed_connection_never_resumes() -> None:
    async with _proxied_echo() as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        assert await _roundtrip(reader, writer, b"hello") == b"hello"
        proxy.delay_s, proxy.jitter_s = 0.1, 0.05
        started = time.monotonic()
        for k in range(20):
            writer.write(b"%02d" % k)
            await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(40), 5.0)
        assert got == b"".join(b"%02d" % k for k in range(20))  # in order, whatever the jitter
        assert time.monotonic() - started >= 0.2  # there and back
        proxy.clear()
        proxy.blocked = True
        writer.write(b"lost")
        await writer.drain()
        await wait_for(lambda: proxy.chunks_swallowed > 0, 5.0, "the blackhole swallowed the chunk")
        proxy.clear()
        relayed = proxy.chunks_relayed
        writer.write(b"after the heal")
        await writer.drain()
        # A stream with a hole stays dead: swallowed too, never relayed (so the echo can never come back).
        await wait_for(lambda: proxy.chunks_swallowed == 2, 5.0, "the poisoned connection swallowed the chunk")
        assert proxy.chunks_relayed == relayed
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        assert await _roundtrip(reader, writer, b"new connection") == b"new connection"
        writer.close()


async def test_a_lost_chunk_resets_its_connection() -> None:
    async with _proxied_echo() as proxy:
        proxy.loss = 1.0
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"x")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 5.0) == b""  # reset: no echo, the stream ends
        assert proxy.resets == 1
        writer.close()
