"""Node configuration: command-line flags and an optional TOML file, validated before anything starts.

Every problem is reported as one line naming the setting, what was wrong and what to do, and ``raftkv serve``
exits with code 2. Flags override the file. TOML keys are the flag names with underscores::

    id = 1
    cluster_id = "prod"
    data_dir = "/var/lib/raftkv/1"
    listen_peer = "10.0.0.1:7001"
    listen_client = "10.0.0.1:9001"
    peers = { 1 = "10.0.0.1:7001", 2 = "10.0.0.2:7001", 3 = "10.0.0.3:7001" }
    cert_file = "/etc/raftkv/node1.crt"     # TLS on the client port (etcd's flag names)
    key_file = "/etc/raftkv/node1.key"
    trusted_ca_file = "/etc/raftkv/ca.crt"
    client_cert_auth = true
    peer_cert_file = "/etc/raftkv/node1-peer.crt"   # mutual TLS between members (its DNS name: node-1)
    peer_key_file = "/etc/raftkv/node1-peer.key"
    peer_trusted_ca_file = "/etc/raftkv/ca.crt"
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from raftkv.errors import ConfigError
from raftkv.raft.types import NodeId
from raftkv.transport.address import Address, AddressError
from raftkv.transport.tls import TLSConfigError, TLSFiles, client_context, peer_contexts, server_context

_CLUSTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(slots=True)
class NodeConfig:
    id: NodeId
    data_dir: Path
    listen_peer: Address
    peers: dict[NodeId, Address]
    """Where *this* node reaches each member's peer port (its own entry included)."""
    cluster_id: str = "raftkv"
    listen_client: Address | None = None
    listen_metrics: Address | None = None
    """``--listen-http`` (once ``--listen-metrics``): the dashboard, /health, /status.json and /metrics."""
    listen_etcd: Address | None = None
    """``--listen-etcd``: serve etcd's v3 gRPC API here (raftkv.kvserver.etcd_api); off unless given."""
    tick_ms: int = 10
    election_ticks: int = 15
    heartbeat_ticks: int = 5
    pre_vote: bool = True
    check_quorum: bool = True
    lazy_commit: bool = True
    """Followers hear of a commit index that moved without new entries at the next tick (see RaftConfig)."""
    log_level: str = "info"
    log_format: str = "text"
    peer_timeout_ms: int = 1000
    """Deadline of every call to a peer (a stopped peer never answers by itself)."""
    snapshot_entries: int = 10_000
    """Take a snapshot (and compact the log) every this many applied entries; 0 disables snapshots."""
    snapshot_trailing: int = 1_000
    """Entries kept in the log below a snapshot, so a briefly lagging follower gets entries, not a snapshot."""
    snapshot_bytes: int = 64 << 20
    """Also snapshot once this many bytes of commands were applied since the last snapshot (0: no byte trigger)."""
    snapshot_growth: float = 0.5
    """Either trigger fires only once the commands applied since the last snapshot add up to at least this
    fraction of that snapshot's size (0: no such floor). A snapshot rewrites the whole state, so without this
    floor a large store would spend most of its time snapshotting (1M keys: a 125 MB image every 10,000 puts);
    with it, at most 1/growth snapshot bytes are written per command byte, and the log stays under about
    growth x the snapshot's size (the rule Redis uses to rewrite its append-only file)."""
    wal_segment_bytes: int = 64 << 20
    """Size at which the write-ahead log starts a new segment file (compaction deletes whole segments)."""
    auto_compaction_mode: str = "revision"
    """``--auto-compaction-mode``: ``revision`` (keep the last N revisions) or ``periodic`` (keep a duration)."""
    auto_compaction_retention: str = "10000"
    """``--auto-compaction-retention``: revisions, or a duration (``1h``; a bare number is hours) in periodic mode;
    0 turns automatic compaction of the KV history off (see raftkv.kv.compactor; the KV server validates both,
    as the runtime knows nothing of the store)."""
    cert_file: Path | None = None
    """``--cert-file``: the client port's TLS certificate (PEM; with ``--key-file``: the port serves TLS only)."""
    key_file: Path | None = None
    """``--key-file``: the private key of ``--cert-file`` (PEM, unencrypted)."""
    trusted_ca_file: Path | None = None
    """``--trusted-ca-file``: the CA that signs client certificates (with ``--client-cert-auth``); also the CA
    this node trusts when it dials the client ports of ``--join``."""
    client_cert_auth: bool = False
    """``--client-cert-auth``: clients must present a certificate the trusted CA signed (mutual TLS)."""
    peer_cert_file: Path | None = None
    """``--peer-cert-file``: this member's certificate on the peer port (PEM). It must carry the DNS name
    ``node-<id>`` (``raftkv.transport.tls.member_name``): peers tell members apart by it."""
    peer_key_file: Path | None = None
    """``--peer-key-file``: its private key (PEM, unencrypted)."""
    peer_trusted_ca_file: Path | None = None
    """``--peer-trusted-ca-file``: the CA that signs every member's peer certificate."""
    peer_client_cert_auth: bool = False
    """``--peer-client-cert-auth`` (etcd's flag): peer TLS is always mutual here, so this only documents it."""
    max_request_bytes: int = 1_572_864
    """``--max-request-bytes`` (etcd's flag and default, 1.5 MiB): the largest command a client may send (a put's
    key and value, a txn, ...); a larger one is refused with ``LimitExceeded`` and never proposed."""
    max_txn_ops: int = 128
    """``--max-txn-ops`` (etcd's): at most this many compares, and as many operations per branch, in one txn."""
    max_key_bytes: int = 511
    """``--max-key-bytes``: the longest key (and range end) a client may send, at most 511 (LMDB's key size,
    which every node enforces alike in the state machine); a longer one is refused with ``LimitExceeded``."""
    max_watchers_per_connection: int = 1000
    """``--max-watchers-per-connection``: watches one client connection may hold open at once; one more is
    refused with ``LimitExceeded``."""
    max_watch_pending_bytes: int = 64 << 20
    """``--max-watch-pending-bytes`` (64 MiB): keys and values of events one watch may have waiting for a slow
    watcher; past it the watch is cancelled (the watcher re-reads and watches again), so a stalled watcher
    cannot grow the node's memory."""
    auth_token_ttl: int = 300
    """``--auth-token-ttl`` (etcd's flag and default): seconds a token from ``Authenticate`` stays valid; the
    client then authenticates again by itself."""
    max_connections: int = 1000
    """``--max-connections``: connections open at once on each port (client, peer); more are closed as they arrive,
    with a log line every 10 s at most. 0: no limit (then the process's file descriptors are the limit)."""
    join: tuple[Address, ...] = ()
    """``--join``: client addresses of members of an existing cluster. A node with an empty data dir then
    joins it (it must have been added with ``raftkv member add`` first) instead of bootstrapping a new
    cluster from ``peers``; the configuration comes from the cluster. Ignored once the data dir holds one."""
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, check_ports: bool = True) -> None:
        if self.id < 1:
            raise ConfigError(f"--id must be a positive integer, got {self.id}")
        if not _CLUSTER_ID.match(self.cluster_id):
            raise ConfigError(
                f"--cluster-id {self.cluster_id!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        if self.id not in self.peers:
            raise ConfigError(f"--peers does not list this node (id {self.id}): add {self.id}=HOST:PORT")
        seen: dict[Address, NodeId] = {}
        for nid, addr in sorted(self.peers.items()):
            if addr in seen:
                raise ConfigError(f"--peers gives nodes {seen[addr]} and {nid} the same address {addr}")
            seen[addr] = nid
        if self.listen_client is not None and self.listen_client == self.listen_peer:
            raise ConfigError(f"--listen-client and --listen-peer are both {self.listen_peer}: use two ports")
        if self.listen_metrics is not None and self.listen_metrics in (self.listen_peer, self.listen_client):
            raise ConfigError(f"--listen-http {self.listen_metrics} is already used by another listener")
        if self.listen_etcd is not None:
            if self.listen_etcd in (self.listen_peer, self.listen_client, self.listen_metrics):
                raise ConfigError(f"--listen-etcd {self.listen_etcd} is already used by another listener")
            if self.listen_client is None:
                raise ConfigError("--listen-etcd needs --listen-client: the gateway goes through the client port")
        if self.tick_ms < 1:
            raise ConfigError(f"tick_ms must be >= 1, got {self.tick_ms}")
        if not self.election_ticks > self.heartbeat_ticks >= 1:
            raise ConfigError(
                f"election_ticks ({self.election_ticks}) must exceed heartbeat_ticks ({self.heartbeat_ticks}) >= 1"
            )
        if self.snapshot_entries < 0 or self.snapshot_trailing < 0 or self.snapshot_bytes < 0:
            raise ConfigError("--snapshot-entries, --snapshot-bytes and --snapshot-trailing must be >= 0")
        if not 0 <= self.snapshot_growth <= 100:
            raise ConfigError(f"--snapshot-growth must be between 0 and 100, got {self.snapshot_growth}")
        if self.wal_segment_bytes < 64 << 10:
            raise ConfigError(f"--wal-segment-bytes must be at least 65536, got {self.wal_segment_bytes}")
        if self.max_request_bytes < 1024:
            raise ConfigError(f"--max-request-bytes must be at least 1024, got {self.max_request_bytes}")
        if self.max_connections < 0:
            raise ConfigError(f"--max-connections must be 0 (no limit) or more, got {self.max_connections}")
        if not 1 <= self.max_key_bytes <= 511:
            raise ConfigError(f"--max-key-bytes must be 1..511 (LMDB's key size), got {self.max_key_bytes}")
        if self.max_watchers_per_connection < 1:
            raise ConfigError(
                f"--max-watchers-per-connection must be at least 1, got {self.max_watchers_per_connection}"
            )
        if self.max_watch_pending_bytes < 1 << 20:
            raise ConfigError(f"--max-watch-pending-bytes must be at least 1048576, got {self.max_watch_pending_bytes}")
        if self.auth_token_ttl < 1:
            raise ConfigError(f"--auth-token-ttl must be at least 1 second, got {self.auth_token_ttl}")
        if self.max_txn_ops < 1:
            raise ConfigError(f"--max-txn-ops must be at least 1, got {self.max_txn_ops}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"--log-level {self.log_level!r}: use debug, info, warning or error")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"--log-format {self.log_format!r}: use text or json")
        self.client_tls()  # the files must load now: a bad one is one line at start, not a failed handshake later
        self.peer_tls()
        if check_ports:
            listeners: list[tuple[str, Address | None]] = [
                ("--listen-peer", self.listen_peer),
                ("--listen-client", self.listen_client),
                ("--listen-http", self.listen_metrics),
                ("--listen-etcd", self.listen_etcd),
            ]
            for flag, where in listeners:
                if where is not None:
                    check_port_free(flag, where)

    @property
    def client_tls_files(self) -> TLSFiles:
        return TLSFiles(self.cert_file, self.key_file, self.trusted_ca_file)

    def client_tls(self) -> ssl.SSLContext | None:
        """The client port's TLS context (None: plaintext); a bad file raises ``ConfigError`` naming it."""
        files = self.client_tls_files
        if not files.enabled and not self.client_cert_auth:
            return None
        try:
            return server_context(files, self.client_cert_auth)
        except TLSConfigError as e:
            raise ConfigError(str(e)) from None

    def peer_tls(self) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
        """(server, client) contexts of the peer port under mutual TLS, or None (plaintext)."""
        files = TLSFiles(self.peer_cert_file, self.peer_key_file, self.peer_trusted_ca_file)
        if not files.enabled and not self.peer_client_cert_auth:
            return None
        try:
            return peer_contexts(files)
        except TLSConfigError as e:
            raise ConfigError(str(e)) from None

    def join_tls(self) -> ssl.SSLContext | None:
        """The context this node dials ``--join`` client ports with when its own client port serves TLS: it
        trusts ``--trusted-ca-file`` and presents its own certificate (the members may require one)."""
        if self.cert_file is None:
            return None
        flags = ("--cert-file", "--key-file", "--trusted-ca-file")
        try:
            return client_context(self.client_tls_files, flags)
        except TLSConfigError as e:
            raise ConfigError(str(e)) from None


def check_port_free(flag: str, addr: Address) -> None:
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr.host, addr.port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"{flag} {addr}: port {addr.port} is already in use (another raftkv node or program?)"
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"{flag} {addr}: {addr.host} is not an address of this machine") from None
            raise ConfigError(f"{flag} {addr}: cannot listen there ({e.strerror})") from None


def parse_peers(text: str) -> dict[NodeId, Address]:
    """``1=HOST:PORT,2=HOST:PORT,...`` with a clear error for each way it can be wrong."""
    peers: dict[NodeId, Address] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        nid_text, sep, addr_text = item.partition("=")
        if not sep:
            raise ConfigError(f"--peers entry {item!r} is not ID=HOST:PORT (e.g. 1=127.0.0.1:7001)")
        nid = _parse_id(nid_text, f"--peers entry {item!r}")
        if nid in peers:
            raise ConfigError(f"--peers lists node {nid} twice")
        try:
            peers[nid] = Address.parse(addr_text, f"--peers address of node {nid}")
        except AddressError as e:
            raise ConfigError(str(e)) from None
    if not peers:
        raise ConfigError("--peers is empty: give every member as ID=HOST:PORT, comma-separated")
    return peers


def _parse_id(text: str, what: str) -> NodeId:
    try:
        nid = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"{what}: node id {text!r} is not an integer") from None
    if nid < 1:
        raise ConfigError(f"{what}: node id {nid} must be >= 1")
    return NodeId(nid)


def _address(value: Any, flag: str) -> Address:
    try:
        return Address.parse(str(value), flag)
    except AddressError as e:
        raise ConfigError(str(e)) from None


_KNOWN = {f.name for f in fields(NodeConfig)} - {"extra"}


def build_config(options: Mapping[str, Any], config_file: Path | None = None) -> NodeConfig:
    """Merge a TOML file (if any) with command-line ``options`` (None = not given) into a NodeConfig."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file, "rb") as f:
                from_file = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"--config {config_file}: no such file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--config {config_file}: not valid TOML ({e})") from None
        unknown = sorted(set(from_file) - _KNOWN)
        if unknown:
            raise ConfigError(f"--config {config_file}: unknown setting(s) {', '.join(unknown)}")
        values.update(from_file)
    values.update({k: v for k, v in options.items() if v is not None})

    join_value = values.get("join") or ()
    join_items = join_value.split(",") if isinstance(join_value, str) else [str(v) for v in join_value]
    join = tuple(_address(item.strip(), "--join") for item in join_items if item.strip())
    if join and not values.get("peers") and values.get("id") not in (None, "") and values.get("listen_peer"):
        # A joining node learns the other members from the cluster: only its own entry is needed.
        values["peers"] = f"{values['id']}={values['listen_peer']}"
    for required in ("id", "data_dir", "listen_peer", "peers"):
        if values.get(required) in (None, ""):
            hint = " (or --join to join an existing cluster)" if required == "peers" else ""
            raise ConfigError(f"--{required.replace('_', '-')} is required (on the command line or in --config){hint}")
    peers_value = values["peers"]
    if isinstance(peers_value, str):
        peers = parse_peers(peers_value)
    elif isinstance(peers_value, Mapping):
        peers = parse_peers(",".join(f"{k}={v}" for k, v in peers_value.items()))
    else:
        raise ConfigError("peers must be 'ID=HOST:PORT,...' or a table of ID = \"HOST:PORT\"")
    http = values.get("listen_http") or values.get("listen_metrics")  # the old name still read
    cfg = NodeConfig(
        id=_parse_id(values["id"], "--id"),
        data_dir=Path(values["data_dir"]),
        listen_peer=_address(values["listen_peer"], "--listen-peer"),
        peers=peers,
        cluster_id=str(values.get("cluster_id", "raftkv")),
        listen_client=_address(values["listen_client"], "--listen-client") if values.get("listen_client") else None,
        listen_metrics=_address(http, "--listen-http") if http else None,
        listen_etcd=_address(values["listen_etcd"], "--listen-etcd") if values.get("listen_etcd") else None,
        join=join,
    )
    for name in (
        "tick_ms",
        "election_ticks",
        "heartbeat_ticks",
        "peer_timeout_ms",
        "snapshot_entries",
        "snapshot_trailing",
        "wal_segment_bytes",
        "snapshot_bytes",
        "max_request_bytes",
        "max_txn_ops",
        "max_connections",
        "auth_token_ttl",
        "max_watchers_per_connection",
        "max_watch_pending_bytes",
        "max_key_bytes",
    ):
        if name in values:
            setattr(cfg, name, _int(values[name], name))
    if "snapshot_growth" in values:
        try:
            cfg.snapshot_growth = float(values["snapshot_growth"])
        except (TypeError, ValueError):
            raise ConfigError(f"snapshot_growth must be a number, got {values['snapshot_growth']!r}") from None
    for name in ("cert_file", "key_file", "trusted_ca_file", "peer_cert_file", "peer_key_file", "peer_trusted_ca_file"):
        if values.get(name) not in (None, ""):
            setattr(cfg, name, Path(str(values[name])))
    for name in ("pre_vote", "check_quorum", "lazy_commit", "client_cert_auth", "peer_client_cert_auth"):
        if name in values:
            setattr(cfg, name, bool(values[name]))
    for name in ("log_level", "log_format", "auto_compaction_mode", "auto_compaction_retention"):
        if name in values:
            setattr(cfg, name, str(values[name]))
    return cfg


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
