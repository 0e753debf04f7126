"""Prometheus metrics of one node (``--listen-http HOST:PORT`` serves ``/metrics``: ``raftkv.runtime.http``).

Each node has its own registry, so several nodes in one process (tests, embedders) do not collide. Transport
counters are plain integers in the transport and are read at scrape time by a custom collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from raftkv.raft.types import NodeId
from raftkv.transport.peers import Transport

_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class NodeMetrics:
    def __init__(self, node_id: NodeId) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.term = Gauge("raftkv_term", "Current Raft term", registry=r)
        self.commit = Gauge("raftkv_commit_index", "Highest index known to be committed", registry=r)
        self.applied = Gauge("raftkv_applied_index", "Highest index applied to the state machine", registry=r)
        self.is_leader = Gauge("raftkv_is_leader", "1 if this node is the leader", registry=r)
        self.leader_changes = Counter("raftkv_leader_changes", "Changes of role, leader or term seen", registry=r)
        self.proposals = Counter("raftkv_proposals", "Proposals accepted by this node as leader", registry=r)
        self.read_barriers = Counter(
            "raftkv_read_barriers", "Linearizable reads asked of this node (ReadIndex barriers)", registry=r
        )
        self.snapshots = Counter("raftkv_snapshots", "Snapshots this node took (and compacted its log to)", registry=r)
        self.append_seconds = Histogram(
            "raftkv_append_seconds", "Time to write (and fsync) one Ready", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.fsync_seconds = Histogram(
            "raftkv_fsync_seconds",
            "Time of write + fsync of a Ready that needed it",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "raftkv_commit_seconds",
            "On the leader, time from a batch's proposal to its last command applied (what its callers wait)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.node_id = node_id

    def watch_transport(self, transport: Callable[[], Transport | None]) -> None:
        """Read the transport's counters from ``transport()`` at each scrape (the node's HTTP port serves
        ``/metrics``: ``raftkv.runtime.http``)."""
        self.registry.register(_TransportCollector(transport))


class _TransportCollector(Collector):
    def __init__(self, transport: Callable[[], Transport | None]) -> None:
        self.transport = transport

    def collect(self) -> Iterator[Any]:
        t = self.transport()
        if t is None:
            return
        c = t.counters
        errors = CounterMetricFamily("raftkv_rpc_errors", "Failed calls and connections, by peer", labels=["peer"])
        for peer, n in sorted(c.rpc_errors.items()):
            errors.add_metric([str(peer)], n)
        yield errors
        sent = CounterMetricFamily("raftkv_messages_sent", "Raft messages delivered, by peer", labels=["peer"])
        for peer, n in sorted(c.sent_msgs.items()):
            sent.add_metric([str(peer)], n)
        yield sent
        dropped = CounterMetricFamily("raftkv_messages_dropped", "Messages dropped (queue full)", labels=["peer"])
        for peer, n in sorted(c.dropped_msgs.items()):
            dropped.add_metric([str(peer)], n)
        yield dropped
        yield CounterMetricFamily("raftkv_malformed_inputs", "Peer requests refused as malformed", value=c.malformed)
        yield CounterMetricFamily("raftkv_refused_requests", "Peer requests from outside the cluster", value=c.refused)
        up = GaugeMetricFamily("raftkv_peer_connected", "1 if the connection to the peer is up", labels=["peer"])
        for peer in sorted(t.links):
            up.add_metric([str(peer)], 1 if t.connected(peer) else 0)
        yield up
