"""KVService.execute on its own, with a stand-in node: what happens to the writes after one that fails."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest

from raftkv.kv import KVStateMachine, MemoryBackend, Put
from raftkv.kvserver.service import KVService
from raftkv.raft.errors import ProposalDropped
from raftkv.raft.types import Index, NodeId, Term
from raftkv.runtime.config import NodeConfig
from raftkv.transport.address import Address


class _Node:
    """Leads, and hands out futures the test resolves."""

    id = 1
    is_leader = True
    config = NodeConfig(id=NodeId(1), data_dir=Path("unused"), listen_peer=Address("127.0.0.1", 1), peers={})

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    def submit_batch(self, datas: list[bytes]) -> tuple[Index, Term, list[asyncio.Future[Any]]]:
        loop = asyncio.get_running_loop()
        self.futures = [loop.create_future() for _ in datas]
        return Index(10), Term(1), self.futures


async def test_writes_after_a_failed_one_fail_without_an_unretrieved_exception() -> None:
    node = _Node()
    service = KVService(node, KVStateMachine(MemoryBackend()), leases=object())  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    call = asyncio.ensure_future(service.execute([(Put(b"a", b"1"), False), (Put(b"b", b"2"), False)], 5.0))
    await asyncio.sleep(0)
    first, second = node.futures
    first.set_exception(ProposalDropped("index 10 was taken by another leader's entry"))
    with pytest.raises(ProposalDropped):
        await call
    second.set_exception(ProposalDropped("index 11 was taken by another leader's entry"))  # nobody awaits it
    await asyncio.sleep(0)
    del first, second, call
    node.futures = []
    gc.collect()
    await asyncio.sleep(0)
    assert not [c for c in reported if "never retrieved" in c.get("message", "")], reported
