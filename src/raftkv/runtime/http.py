"""The node's HTTP port (``--listen-http HOST:PORT``): the dashboard, health, status and metrics (issue 21).

Theory of operation
-------------------
An aiohttp server on the node's own event loop (it reads the node's state where it lives: no locks, no
copies across threads). Its routes:

* ``/`` — the dashboard: one HTML page with no build step (``runtime/dashboard/``; the charts are uPlot,
  vendored there with its licence). It opens ``/events`` and redraws on every message: nothing to refresh.
* ``/events`` — server-sent events: this node's status (``/status.json``'s body) every
  :data:`EVENT_INTERVAL_S`, for as long as the page stays open.
* ``/status.json`` — this node's view: role, term, commit and applied index, the members with their role,
  lag (known to a leader) and reachability, the last leader and membership changes, what the layers above
  add (``store``: the key-value store's revision, compaction and leases), and the counters the charts turn
  into rates (entries applied, proposals, linearizable reads, fsyncs and their total time, batches committed
  and their total commit latency).
* ``/health`` — etcd's shape: ``200 {"health": "true"}`` when this node is part of a working cluster, else
  ``503 {"health": "false", "reason": ...}``. A leader must confirm its leadership with a read barrier (a
  heartbeat round answered by a majority, Raft §6.4) within :data:`HEALTH_TIMEOUT_S`; a follower must know a
  leader and be connected to it. A node cut off from the majority fails both: its leader cannot confirm, and
  a follower that stops hearing from its leader campaigns and so knows none.
* ``/metrics`` — Prometheus's text format, from the node's registry.
* ``/kv/NAME`` — pages the layers above register in ``RaftNode.http_handlers`` (the key-value store's key
  browser, ``/kv/keys``: ``raftkv.kvserver.browser``).

The node's view, not the cluster's: a follower knows who leads and whom it reaches, not the others' indexes;
the leader's page shows every member's lag. The page says which node it is served by.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from raftkv.errors import RaftError
from raftkv.transport.address import Address

HttpHandler = Callable[[dict[str, str], str], Awaitable[tuple[int, Any]]]
"""A handler of ``/kv/NAME``: (query, Authorization header) -> (HTTP status, JSON body)."""


class RaftNode(Protocol):
    """What the HTTP port reads of ``raftkv.runtime.node.RaftNode`` (a protocol: no import cycle)."""

    id: Any
    metrics: Any
    history: Any
    status_extras: list[Callable[[], dict[str, Any]]]
    http_handlers: dict[str, HttpHandler]
    transport: Any
    stopped: asyncio.Event

    def status(self) -> Any: ...

    def members(self) -> list[dict[str, Any]]: ...

    async def read_barrier(self, timeout: float | None = 5.0) -> Any: ...


log = logging.getLogger("raftkv.http")

DASHBOARD: Final = Path(__file__).parent / "dashboard"
EVENT_INTERVAL_S: Final = 0.5
"""How often ``/events`` sends the node's status (the page's charts are per second, computed from counters)."""
HEALTH_TIMEOUT_S: Final = 1.0
"""A leader's read barrier must pass within this long for ``/health`` to say it is healthy."""
_ASSETS: Final = {
    "uPlot.iife.min.js": "application/javascript",
    "uPlot.min.css": "text/css",
    "dashboard.js": "application/javascript",
}


def status_of(node: RaftNode) -> dict[str, Any]:
    """What ``/status.json`` and each ``/events`` message carry: the node's view of the cluster, now."""
    s = node.status()
    m = node.metrics
    return {
        "time": time.time(),
        "id": int(s.id),
        "cluster_id": s.cluster_id,
        "role": s.role,
        "term": s.term,
        "leader": s.leader,
        "commit": s.commit,
        "applied": s.applied,
        "last_index": s.last_index,
        "members": node.members(),
        "history": list(node.history),
        "store": {k: v for extra in node.status_extras for k, v in extra().items()},
        "counters": {
            "applied": s.applied,
            "proposals": _value(m.proposals),
            "reads": _value(m.read_barriers),
            "fsyncs": _histogram(m.fsync_seconds)[0],
            "fsync_seconds": _histogram(m.fsync_seconds)[1],
            "commits": _histogram(m.commit_seconds)[0],
            "commit_seconds": _histogram(m.commit_seconds)[1],
        },
    }


def _value(counter: Any) -> float:
    return float(counter._value.get())  # prometheus_client keeps the value here; reading it costs no scrape


def _histogram(histogram: Any) -> tuple[float, float]:
    """(count, sum) of a prometheus_client Histogram without a scrape."""
    count = sum(float(b.get()) for b in histogram._buckets)
    return count, float(histogram._sum.get())


async def health_of(node: RaftNode) -> tuple[bool, str]:
    """(healthy, why not): see the module's docstring."""
    s = node.status()
    if s.leader is None:
        return False, "no leader known: an election is under way, or this node is cut off from the majority"
    if s.leader == s.id:
        try:
            await node.read_barrier(timeout=HEALTH_TIMEOUT_S)
        except (RaftError, TimeoutError) as e:
            return False, f"the leader could not confirm its leadership within {HEALTH_TIMEOUT_S} s ({e})"
        return True, ""
    if node.transport is None or not node.transport.connected(s.leader):
        return False, f"not connected to the leader (node {s.leader})"
    return True, ""


class HttpServer:
    """The node's HTTP port; started and stopped by the node."""

    def __init__(self, node: RaftNode, registry: Any) -> None:
        self.node = node
        self.registry = registry
        self._runner: web.AppRunner | None = None
        self._streams: set[web.StreamResponse] = set()
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/status.json", self._status)
        app.router.add_get("/events", self._events)
        app.router.add_get("/kv/{name}", self._kv)
        for name in _ASSETS:
            app.router.add_get(f"/static/{name}", self._asset(name))
        self.app = app

    async def start(self, address: Address) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, address.host, address.port).start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(f"--listen-http {address}: cannot listen there ({e.strerror or e})") from None
        self._runner = runner
        log.info("node %s: dashboard, /health, /status.json and /metrics on http://%s/", self.node.id, address)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(body=(DASHBOARD / "index.html").read_bytes(), content_type="text/html")

    def _asset(self, name: str) -> Callable[[web.Request], Any]:
        async def serve(_request: web.Request) -> web.Response:
            return web.Response(body=(DASHBOARD / name).read_bytes(), content_type=_ASSETS[name])

        return serve

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, _request: web.Request) -> web.Response:
        ok, why = await health_of(self.node)
        body = {"health": "true"} if ok else {"health": "false", "reason": why}
        return web.json_response(body, status=200 if ok else 503)

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(status_of(self.node))

    async def _kv(self, request: web.Request) -> web.Response:
        handler = self.node.http_handlers.get(request.match_info["name"])
        if handler is None:
            return web.json_response({"error": "no such page on this node"}, status=404)
        status, body = await handler(dict(request.query), request.headers.get("Authorization", ""))
        headers = {"WWW-Authenticate": 'Basic realm="raftkv"'} if status == 401 else None
        return web.json_response(body, status=status, headers=headers)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            while not self.node.stopped.is_set():
                await response.write(f"data: {json.dumps(status_of(self.node))}\n\n".encode())
                await asyncio.sleep(EVENT_INTERVAL_S)
        except (ConnectionResetError, RuntimeError):  # the page went away
            pass
        return response
