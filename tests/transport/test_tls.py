"""TLS through the dial/listen seam: RPC and plain connections inside TLS, and every refusal the port owes."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import capnp  # type: ignore[import-untyped]
import pytest

from raftkv.cli.local import free_ports
from raftkv.transport.address import Address
from raftkv.transport.kjloop import kj_loop
from raftkv.transport.streams import PLAIN, Listener, StreamLayer
from raftkv.transport.tls import TLSConfigError, TLSFiles, client_context, server_context
from raftkv.transport.wire import schema
from tests.tlscerts import CA, Pair
from tests.transport.test_streams import EchoService, PlainRecorder

MAGIC = b"MAGC"
REFUSED = (ssl.SSLError, OSError, capnp.KjException)
"""How a refused handshake reaches the dialler: an SSL error, a reset, or (TLS 1.3, where the client's
handshake ends before the server checks its certificate) Cap'n Proto's "disconnected" on the first call."""


@dataclass
class Certs:
    ca: CA
    server: Pair
    client: Pair
    expired: Pair
    stranger_ca: CA
    stranger: Pair


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca = CA.make(tmp_path / "ca")
    other = CA.make(tmp_path / "other", name="another CA")
    return Certs(
        ca,
        ca.issue(tmp_path / "ca", "node"),
        ca.issue(tmp_path / "ca", "alice"),
        ca.issue(tmp_path / "ca", "alice", expired=True),
        other,
        other.issue(tmp_path / "other", "mallory"),
    )


@dataclass
class Port:
    address: Address
    listener: Listener
    seen: list[bytes]


async def _serve(layer: StreamLayer) -> AsyncIterator[Port]:
    (port,) = free_ports(1)
    address = Address("127.0.0.1", port)
    seen: list[bytes] = []
    async with kj_loop():
        listener = await layer.listen(
            address,
            lambda _close, _names: EchoService(),
            name="tls test",
            plain=lambda: PlainRecorder(seen),
            magic=MAGIC,
        )
        try:
            yield Port(address, listener, seen)
        finally:
            await listener.aclose()


@pytest.fixture
async def mtls_port(certs: Certs) -> AsyncIterator[Port]:
    files = TLSFiles(certs.server.cert, certs.server.key, certs.ca.path)
    async for port in _serve(StreamLayer(server_tls=server_context(files, client_cert_auth=True))):
        yield port


def _client(certs: Certs, pair: Pair | None, ca: Path | None = None) -> StreamLayer:
    files = TLSFiles(pair.cert if pair else None, pair.key if pair else None, ca or certs.ca.path)
    return StreamLayer(client_tls=client_context(files))


async def _ping(layer: StreamLayer, address: Address) -> tuple[bytes, int]:
    client = await layer.dial_rpc(address, timeout=2.0)
    try:
        cap = client.bootstrap().cast_as(schema.Client)
        async with asyncio.timeout(2):
            r = await cap.ping(header={"clusterId": ""}, payload=b"hi")
        return bytes(r.payload), int(r.nodeId)
    finally:
        client.close()


async def test_rpc_and_plain_connections_both_run_inside_mutual_tls(certs: Certs, mtls_port: Port) -> None:
    layer = _client(certs, certs.client)
    assert await _ping(layer, mtls_port.address) == (b"hi", 42)
    transport, _ = await layer.dial_plain(mtls_port.address, asyncio.Protocol, timeout=2.0)
    try:
        assert transport.get_extra_info("ssl_object") is not None
        transport.write(MAGIC + b"rest")
        async with asyncio.timeout(2):
            while b"".join(mtls_port.seen) != MAGIC + b"rest":  # the magic too: the plain protocol gets it all
                await asyncio.sleep(0.01)
    finally:
        transport.close()


@pytest.mark.parametrize("who", ["no certificate", "expired", "another CA"])
async def test_mutual_tls_refuses_a_client_without_a_good_certificate(
    certs: Certs, mtls_port: Port, who: str, caplog: pytest.LogCaptureFixture
) -> None:
    pair = {"no certificate": None, "expired": certs.expired, "another CA": certs.stranger}[who]
    layer = _client(certs, pair)
    with caplog.at_level(logging.WARNING, logger="raftkv.transport"), pytest.raises(REFUSED):
        await _ping(layer, mtls_port.address)  # TLS 1.3: the refusal may only show on the first read
    async with asyncio.timeout(2):
        while "TLS handshake failed" not in caplog.text:
            await asyncio.sleep(0.01)


async def test_a_client_that_does_not_trust_the_nodes_ca_refuses_the_node(certs: Certs, mtls_port: Port) -> None:
    layer = _client(certs, certs.client, ca=certs.stranger_ca.path)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _ping(layer, mtls_port.address)


async def test_a_plaintext_client_at_a_tls_port_is_refused_with_one_line(
    mtls_port: Port, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="raftkv.transport"):
        transport, _ = await PLAIN.dial_plain(mtls_port.address, asyncio.Protocol, timeout=2.0)
        transport.write(MAGIC + b"plaintext")
        async with asyncio.timeout(2):
            while not transport.is_closing():
                await asyncio.sleep(0.01)
            while "TLS handshake failed" not in caplog.text:
                await asyncio.sleep(0.01)
    assert mtls_port.seen == []  # nothing reached the protocol
    assert len([r for r in caplog.records if "refused a connection" in r.getMessage()]) == 1


async def test_a_tls_client_at_a_plaintext_port_is_refused_and_told(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    async for port in _serve(PLAIN):
        with caplog.at_level(logging.WARNING, logger="raftkv.transport"), pytest.raises(REFUSED):
            await _ping(_client(certs, certs.client), port.address)
        assert "this port does not serve TLS" in caplog.text


def test_bad_files_are_one_line_naming_the_file_and_the_flag(certs: Certs, tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(TLSConfigError, match=r"--cert-file .*nope\.crt: cannot be read"):
        server_context(TLSFiles(missing, certs.server.key))
    with pytest.raises(TLSConfigError, match="TLS on this port needs --cert-file and --key-file"):
        server_context(TLSFiles(None, certs.server.key))
    with pytest.raises(TLSConfigError, match="--key needs --cert"):
        client_context(TLSFiles(None, certs.client.key, certs.ca.path))
    with pytest.raises(TLSConfigError, match="not a PEM certificate and its private key"):
        server_context(TLSFiles(certs.server.cert, certs.client.key))  # another certificate's key
    with pytest.raises(TLSConfigError, match="--client-cert-auth needs --trusted-ca-file"):
        server_context(TLSFiles(certs.server.cert, certs.server.key), client_cert_auth=True)
    with pytest.raises(TLSConfigError, match=r"--cacert .*: not a PEM CA certificate"):
        client_context(TLSFiles(trusted_ca_file=certs.server.key))
