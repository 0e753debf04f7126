"""``SyncClient``: the blocking client — the same key-value operations, run on a private event loop thread.

Theory of operation
-------------------
The client owns one thread running its own asyncio loop (and so its own KJ loop: KJ's loop is per thread); each
call is handed to that loop with ``run_coroutine_threadsafe`` and waited for. Nothing of the caller's thread
(including an event loop it may run) is touched.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from raftkv.client.kv import Client, connect
from raftkv.transport.address import Address

T = TypeVar("T")

_OPERATIONS = frozenset({"put", "get", "range", "delete", "txn", "cas"})
CLOSE_TIMEOUT_S = 5.0


class SyncClient:
    """The blocking client: the same operations, run on a private event loop thread."""

    def __init__(self, endpoints: Sequence[str | Address], *, cluster_id: str = "", timeout: float = 5.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftkv-client", daemon=True)
        self._thread.start()
        self._cm = connect(endpoints, cluster_id=cluster_id, timeout=timeout)
        self._client: Client = self._run(self._cm.__aenter__())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name in _OPERATIONS:
            method = getattr(self._client, name)
            return lambda *a, **kw: self._run(method(*a, **kw))
        raise AttributeError(name)

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._cm.__aexit__(None, None, None))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CLOSE_TIMEOUT_S)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def connect_sync(endpoints: Sequence[str | Address], *, cluster_id: str = "", timeout: float = 5.0) -> SyncClient:
    """``with raftkv.connect_sync([...]) as client: client.put("k", "v")``."""
    return SyncClient(endpoints, cluster_id=cluster_id, timeout=timeout)
