"""TLS for the stream layer: the contexts a node and a client build from certificate files (etcd's model).

Theory of operation
-------------------
A port serves TLS when the node is given a certificate and its key (etcd's ``--cert-file`` / ``--key-file``);
with a trusted CA and ``client_cert_auth`` (etcd's ``--trusted-ca-file`` / ``--client-cert-auth``) it also
requires every client to present a certificate that CA signed: mutual TLS. A client trusts the CA it is given
(etcdctl's ``--cacert``) and may present its own certificate (``--cert`` / ``--key``). The contexts come from
Python's ``ssl`` module with its defaults for the purpose (``create_default_context``): TLS 1.2 at least, the
platform's cipher choice, and on the client side certificate and host name verification on.

Everything here is checked when the context is built, so a node with a missing, unreadable or mismatched file
refuses to start with one line naming the file (:class:`TLSConfigError`), rather than failing each handshake
later. :class:`~raftkv.transport.streams.StreamLayer` carries the contexts to every dial and every listener:
Cap'n Proto RPC and the frame data planes all run inside TLS.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class TLSConfigError(ValueError):
    """A TLS file is missing, unreadable, or does not fit (a key that is not the certificate's...)."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """The files of one side of TLS: a certificate with its key, and the CA to trust (each optional)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    trusted_ca_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None or self.key_file is not None or self.trusted_ca_file is not None


def _readable(path: Path, what: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise TLSConfigError(f"{what} {path}: cannot be read ({e.strerror or e})") from None


def _load_chain(ctx: ssl.SSLContext, files: TLSFiles, flags: tuple[str, str]) -> None:
    cert, key = files.cert_file, files.key_file
    if (cert is None) != (key is None):
        given, missing = (flags[0], flags[1]) if cert is not None else (flags[1], flags[0])
        raise TLSConfigError(f"{given} needs {missing} too (a certificate and its private key go together)")
    if cert is None or key is None:
        return
    _readable(cert, flags[0])
    _readable(key, flags[1])
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise TLSConfigError(
            f"{flags[0]} {cert} with {flags[1]} {key}: not a PEM certificate and its private key ({e.reason or e})"
        ) from None


def _load_ca(ctx: ssl.SSLContext, ca: Path, flag: str) -> None:
    _readable(ca, flag)
    try:
        ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as e:
        raise TLSConfigError(f"{flag} {ca}: not a PEM CA certificate ({e.reason or e})") from None


def server_context(
    files: TLSFiles,
    client_cert_auth: bool = False,
    flags: tuple[str, str, str, str] = ("--cert-file", "--key-file", "--trusted-ca-file", "--client-cert-auth"),
) -> ssl.SSLContext:
    """The context of a TLS port: our certificate; with ``client_cert_auth``, clients must present one the CA
    signed. ``flags`` name the options in errors (the peer port's are ``--peer-...``)."""
    if files.cert_file is None:
        raise TLSConfigError(f"TLS on this port needs {flags[0]} and {flags[1]} (the port's own certificate)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(ctx, files, (flags[0], flags[1]))
    if client_cert_auth:
        if files.trusted_ca_file is None:
            raise TLSConfigError(f"{flags[3]} needs {flags[2]} (the CA that signs the clients' certificates)")
        _load_ca(ctx, files.trusted_ca_file, flags[2])
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(files: TLSFiles, flags: tuple[str, str, str] = ("--cert", "--key", "--cacert")) -> ssl.SSLContext:
    """The context of a client (or a node dialling a peer): trust ``trusted_ca_file`` (else the system's CAs)
    and verify the node's certificate and host name; present ``cert_file`` if given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if files.trusted_ca_file is not None:
        _load_ca(ctx, files.trusted_ca_file, flags[2])
    _load_chain(ctx, files, (flags[0], flags[1]))
    return ctx


def is_tls_client_hello(head: bytes) -> bool:
    """Whether the first bytes of a connection are a TLS handshake record (a TLS client at a plaintext port).

    A TLS record starts 0x16 (handshake) 0x03 (version major). A Cap'n Proto stream starts with its segment count
    minus one as a little-endian 32-bit integer: these bytes would announce 791 segments or more, which no
    first message has; and the frame planes start with their magic."""
    return len(head) >= 2 and head[0] == 0x16 and head[1] == 0x03


def member_name(node_id: int) -> str:
    """The name a member's peer certificate carries: ``node-<id>``, as a DNS subject alternative name (or as
    its common name, if the certificate has no SANs).

    Peers are told apart by this name, not by their addresses: several members may share an address (one
    machine, a NAT), and a certificate from the cluster's CA must not let one member pose as another."""
    return f"node-{node_id}"


class CertNames(frozenset[str]):
    """The names a verified certificate carries (a frozenset of its DNS names and common names), and its
    subject's ``common_name`` (``""``: none), which is the user under ``--client-cert-auth`` (etcd's rule)."""

    common_name: str

    def __new__(cls, names: Iterable[str] = (), common_name: str = "") -> CertNames:
        self = super().__new__(cls, names)
        self.common_name = common_name
        return self


def cert_names(peercert: object) -> CertNames:
    """The DNS names and common names of a verified certificate (``SSLObject.getpeercert()``'s dict); empty
    for no certificate (a plaintext connection, or a TLS one whose client sent none)."""
    if not isinstance(peercert, dict):
        return CertNames()
    names: set[str] = set()
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "DNS":
            names.add(str(value))
    common = ""
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
                common = common or str(value)
    return CertNames(names, common)


def peer_contexts(
    files: TLSFiles,
    flags: tuple[str, str, str] = ("--peer-cert-file", "--peer-key-file", "--peer-trusted-ca-file"),
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts of a peer port under mutual TLS: both sides present their member certificate
    and trust only the cluster's peer CA. The dialler checks the name of the member it dials
    (:func:`member_name`, as the TLS server name); the acceptor checks the sender's header against the names
    in the certificate it was shown (``raftkv.transport.peers``)."""
    if files.cert_file is None or files.trusted_ca_file is None:
        raise TLSConfigError(
            f"peer TLS is mutual: give {flags[0]}, {flags[1]} and {flags[2]} (this member's certificate and the "
            "CA that signs every member's)"
        )
    server = server_context(files, client_cert_auth=True, flags=(*flags, "--peer-client-cert-auth"))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    _load_ca(client, files.trusted_ca_file, flags[2])
    _load_chain(client, files, (flags[0], flags[1]))
    return server, client
